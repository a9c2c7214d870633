"""YAML text of a small, fast test pipeline."""
import textwrap



def small_pipeline(output, n_objects=24, chunk_size=8, seed=7, extra=""):
    """A fast parametric pipeline (small stamps, small scene) as YAML text."""
    return textwrap.dedent(f"""\
    name: small
    seed: {seed}
    output: {output}
    stages:
      - name: catalog
        type: catalog.cosmos
        n_objects: {n_objects}
        chunk_size: {chunk_size}
      - name: positions
        type: catalog.positions
        inputs: [catalog]
        survey: lsst_i
        size: 128
      - name: render
        type: galsim.parametric
        inputs: [positions]
        stamp_size: 32
      - name: observe
        type: observe
        inputs: [render]
        survey: lsst_i
        stamp_size: 16
      - name: scene
        type: scene
        inputs: [render]
        survey: lsst_i
        stamp_size: 24
      - name: stamps
        type: output.stamps
        inputs: [observe]
      - name: truth
        type: output.catalog
        inputs: [observe]
      - name: preview
        type: output.preview
        inputs: [observe]
        n_max: 9
    """) + extra
