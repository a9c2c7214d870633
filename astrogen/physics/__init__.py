"""Physics around the models: survey presets, PSFs, GalSim rendering, observation, scenes."""
