"""The CLI keeps TensorFlow's oneDNN kernels on and still prints no TensorFlow start-up noise."""
import os
import subprocess
import sys

SCRIPT = """
import os, sys
os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)
from astrogen.cli import main
rc = main(["-v", "0", "stages"])
import tensorflow as tf  # what a stage or a trainer would import next
tf.constant(1.0) + 1.0
print("ONEDNN=" + repr(os.environ.get("TF_ENABLE_ONEDNN_OPTS")), "RC=" + str(rc))
"""


def test_cli_leaves_onednn_on_and_quiet():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last == "ONEDNN=None RC=0", last
    assert "oneDNN" not in out.stderr


def test_no_module_turns_onednn_off():
    """Nothing in the package sets TF_ENABLE_ONEDNN_OPTS (it would slow every run)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "astrogen"
    hits = []
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value == "TF_ENABLE_ONEDNN_OPTS":
                hits.append(str(f))
    assert hits == []
