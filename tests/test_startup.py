"""Opening a widget does not wait for scikit-learn (about 0.8 s to import): it is imported in the background, in
time for the first training. Run in a fresh interpreter, where nothing has imported it yet."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys, time
import numpy as np
from ilastik_widget import IlastikWidget

image = np.random.default_rng(0).random((64, 64), dtype=np.float32)
w = IlastikWidget(image)
assert "sklearn" not in sys.modules, "making the widget imported scikit-learn"
deadline = time.time() + 60
while "sklearn.ensemble" not in sys.modules and time.time() < deadline:
    time.sleep(0.1)
assert "sklearn.ensemble" in sys.modules, "scikit-learn was not imported in the background"
w.add_stroke(1, [[10, 10], [10, 20]], radius=2)
w.add_stroke(2, [[40, 40], [40, 50]], radius=2)
w.wait(120)
assert w.session.is_trained and w.error == "", w.error
print("trained")
"""


def test_the_widget_opens_without_importing_scikit_learn_and_trains_after_it_arrives():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("trained")
