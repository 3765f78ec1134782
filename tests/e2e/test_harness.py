"""The harness itself, against a trivial anywidget defined in the notebook: a WebGL2 canvas that fills with the
widget's colour and counts clicks. Proves the chain the widget tests rely on: JupyterLab runs the notebook, WebGL draws
in headless Chromium, screenshots read its pixels, mouse events reach the widget, and the kernel sees the result."""

import numpy as np

TRIVIAL_WIDGET = r'''
import anywidget, traitlets

class GLDot(anywidget.AnyWidget):
    _esm = """
    function render({ model, el }) {
      const c = document.createElement("canvas");
      c.width = 240; c.height = 120; c.dataset.testid = "gl-canvas";
      c.style.width = "240px"; c.style.height = "120px";
      el.appendChild(c);
      const gl = c.getContext("webgl2");
      el.dataset.webgl2 = String(!!gl);
      const draw = () => {
        const h = model.get("color");
        const v = [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16) / 255);
        gl.clearColor(v[0], v[1], v[2], 1); gl.clear(gl.COLOR_BUFFER_BIT);
      };
      draw();
      model.on("change:color", draw);
      c.addEventListener("mousedown", (e) => {
        model.set("clicks", [...model.get("clicks"), [e.offsetX, e.offsetY]]);
        model.save_changes();
      });
    }
    export default { render };
    """
    color = traitlets.Unicode("#ff0000").tag(sync=True)
    clicks = traitlets.List([]).tag(sync=True)

d = GLDot()
d
'''


def test_harness_drives_a_webgl_anywidget(open_notebook):
    lab = open_notebook("harness.ipynb", [TRIVIAL_WIDGET, "_E2E_DONE = True"])
    canvas = lab.page.locator("[data-testid=gl-canvas]")
    canvas.wait_for(state="visible", timeout=60_000)
    assert lab.page.locator(".jp-OutputArea-output [data-webgl2]").get_attribute("data-webgl2") == "true"

    box = canvas.bounding_box()
    px = lab.screenshot_array(box)
    assert px.shape[:2] == (120, 240)
    assert np.all(np.abs(px[10:-10, 10:-10].astype(int) - [255, 0, 0]).max(axis=-1) <= 2)

    # mouse -> kernel
    lab.page.mouse.click(box["x"] + 30, box["y"] + 40)
    clicks = lab.wait_for(lambda: lab.kernel_eval("d.clicks"), 30, "the click to reach the kernel")
    assert clicks == [[30, 40]]

    # kernel -> screen
    lab.kernel_exec("d.color = '#0000ff'")
    lab.wait_for(lambda: lab.screenshot_array(box)[60, 120].tolist() == [0, 0, 255], 30, "the canvas to turn blue")


def test_harness_reports_cell_errors(open_notebook):
    import pytest
    from e2e_harness import HarnessError

    with pytest.raises(HarnessError, match="ZeroDivisionError"):
        open_notebook("broken.ipynb", ["x = 1", "1 / 0", "_E2E_DONE = True"])
