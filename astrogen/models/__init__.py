"""Neural-network models of astrogen (Keras 3)."""
