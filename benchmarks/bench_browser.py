"""The widget in a real browser: what the browser path adds on top of the kernel's own work.

    python benchmarks/bench_browser.py [--repeats 3]
    python benchmarks/bench_browser.py --volume [--repeats 3]

Runs JupyterLab and headless Chromium through the e2e harness (tests/e2e/e2e_harness.py) on a 1024x1024 synthetic
image shown whole at about one screen pixel per image pixel, and prints each figure beside its baseline from the
same run:

1. Stroke -> prediction on screen: from the mouse release to the first screen frame equal to the settled view with
   the new prediction, against the kernel's own stroke -> prediction time (a second Session on the same image with
   warm feature caches: add the stroke, train, predict the whole image). Target: the browser adds <= 0.3 s.
2. Raw data throughput kernel -> screen (MB/s): image bytes the viewer read from the kernel divided by the time from
   the first image chunk request to the image settled on screen; baseline: the same number of bytes sent as one
   widget message (kernel -> browser, acknowledged back).
3. Time to first image after display(w): from Run Cell to the first screen frame where the image is recognisable;
   baseline: the same image as a PNG in an ipywidgets.Image, displayed the same way.

With ``--volume``: a 120x512x512 uint16 synthetic volume in the four-panel layout (plane-shaped chunks), strokes
painted on the xy panel; from the mouse release to the first screen frame from which all three slice panels show
their settled view with the new prediction, against the kernel's own stroke -> three planes time (a second Session on
the same volume with warm caches: add the stroke, train, predict the xy, xz and yz planes the panels show). Target:
the browser adds <= 0.3 s, as in 2D. Before those strokes, the first training as a user makes it (one measurement):
the release of the first stroke of a second class, once a stroke of the first class is painted and the kernel has
computed the features of the planes in view, to all three panels showing the prediction, beside the kernel's own
cold time for the same strokes on a fresh Session.

Screen times come from Chromium's screencast frames (CDP), stamped by the browser with the same wall clock as the
kernel's time.time().
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from e2e_harness import Browser, LabServer, Screencast
from widget_driver import WidgetDriver

SIZE = 1024
VIEW_HEIGHT = 1080  # CSS px of the widget: the whole image at ~1 screen pixel per image pixel

SETUP = f"""\
import io, json, os, time
import numpy as np
import anywidget, traitlets, ipywidgets
from PIL import Image
from ilastik_widget import IlastikWidget, Session
from ilastik_widget.datasets import synthetic_cells, simulated_strokes

image, truth = synthetic_cells(({SIZE}, {SIZE}), seed=0)
initial = simulated_strokes(truth, n_per_class=4, radius=3, seed=0)
measured = simulated_strokes(truth, n_per_class=5, radius=3, seed=1)
_buf = io.BytesIO()
Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(_buf, format="png")
PNG = _buf.getvalue()

EVENTS = []     # (event, time) from the widget's session
SERVED = []     # (t_start, t_end, keys, nbytes) per chunk read
PUSHED = []     # (time sent, layers, n keys, nbytes) per refresh message

def instrument(w):
    w.session.add_listener(lambda event, **info: EVENTS.append((event, time.time())))
    send = w.send  # every kernel -> browser message goes through the widget's comm here
    def timed_send(content, buffers=None, _send=send):
        _send(content, buffers)
        if content.get("type") == "refresh":
            PUSHED.append((time.time(), content["layers"], len(content.get("keys", [])),
                           sum(len(b) for b in buffers or [])))
    w.send = timed_send
    cs = w.chunk_server
    read = cs.read
    def timed_read(keys, after_each=None, _read=read):
        t0 = time.time()
        out = _read(keys, after_each)
        SERVED.append((t0, time.time(), list(keys), [0 if b is None else len(b) for b in out]))
        return out
    cs.read = timed_read

class Echo(anywidget.AnyWidget):
    _esm = '''
    export default {{ render({{ model }}) {{
      model.on("msg:custom", (msg, buffers) => {{
        model.send({{ n: buffers.reduce((s, b) => s + b.byteLength, 0), t: Date.now() / 1000 }});
      }});
    }} }};'''
    def __init__(self):
        super().__init__()
        self.acks = []
        self.on_msg(lambda _w, content, buffers: self.acks.append((time.time(), content)))

def kernel_reference(stroke):
    # the kernel alone: stroke -> trained -> whole image predicted, features cached as in the widget
    t = time.perf_counter()
    REF.add_stroke(**stroke)
    REF.train()
    REF.predict()
    return time.perf_counter() - t

REF = Session(image)
for s in initial:
    REF.add_stroke(**s)
REF.train(); REF.predict()
"""

NOTEBOOK = [
    SETUP,
    "w = IlastikWidget(image)\ninstrument(w)\nw",
    "echo = Echo()\necho",
    "png = ipywidgets.Image(value=PNG, format='png', width=%d, height=%d)\npng" % (SIZE, SIZE),
]


VOLUME = (120, 512, 512)
VOLUME_VIEW_HEIGHT = 1000  # CSS px of the widget: four panels of about 420 x 480

# The same instrumentation as in 2D; the volume is 2 x 2 tiles of a 120 x 256 x 256 synthetic volume (a quarter of
# the time to make), strokes in the xy plane the view opens on.
VOLUME_SETUP = (
    SETUP[: SETUP.index("image, truth = ")]  # the imports
    + SETUP[SETUP.index("EVENTS = []") : SETUP.index("def kernel_reference")]  # the instrumentation
    + f"""\
Z, Y, X = {VOLUME[0] // 2}, {VOLUME[1] // 2}, {VOLUME[2] // 2}
tile, tile_truth = synthetic_cells(({VOLUME[0]}, {VOLUME[1] // 2}, {VOLUME[2] // 2}), seed=5)
image = (np.clip(np.tile(tile, (1, 2, 2)), 0, 1) * 4000).astype(np.uint16)
truth = np.tile(tile_truth, (1, 2, 2))

def at_z(strokes):
    for s in strokes:
        s["points"] = [[Z, p[1], p[2]] for p in s["points"]]
        s["axes"] = [1, 2]
    return strokes

first = at_z(simulated_strokes(truth[Z : Z + 1], n_per_class=1, radius=3, seed=2))  # the first training's strokes
initial = at_z(simulated_strokes(truth[Z : Z + 1], n_per_class=2, radius=3, seed=0))
measured = at_z(simulated_strokes(truth[Z : Z + 1], n_per_class=5, radius=3, seed=1))
# the planes the three slice panels show
PLANES = [(slice(Z, Z + 1), slice(None), slice(None)), (slice(None), slice(Y, Y + 1), slice(None)),
          (slice(None), slice(None), slice(X, X + 1))]

def kernel_reference(stroke):
    # the kernel alone: stroke -> trained -> the three planes predicted, features cached as in the widget
    t = time.perf_counter()
    REF.add_stroke(**stroke)
    REF.train()
    for plane in PLANES:
        REF.predict(plane)
    return time.perf_counter() - t

def kernel_first_stroke():
    # the kernel alone, cold: a fresh Session, the first strokes, train, the three planes predicted; seconds, and the
    # system CPU seconds among them (the first session of a process faults in its caches' new memory)
    ref = Session(image)
    t, s = time.perf_counter(), os.times().system
    for stroke in first:
        ref.add_stroke(**stroke)
    ref.train()
    for plane in PLANES:
        ref.predict(plane)
    t, s = time.perf_counter() - t, os.times().system - s
    ref.close()
    return t, s

REF = Session(image)
for s in initial:
    REF.add_stroke(**s)
REF.train()
for plane in PLANES:
    REF.predict(plane)
"""
)
VOLUME_NOTEBOOK = [
    VOLUME_SETUP,
    f"w = IlastikWidget(image, height={VOLUME_VIEW_HEIGHT})\nw.brush_size = 7\ninstrument(w)\nw",
]


def pattern_points(step: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[step // 2 : SIZE : step, step // 2 : SIZE : step]
    return np.stack([yy.ravel(), xx.ravel()], 1)


def recognisable(frame: np.ndarray, xy: np.ndarray, ref: np.ndarray, threshold: float = 0.6, r: int = 6) -> bool:
    """Does the frame show the image: grey means of small patches at the sample points follow the smoothed image?"""
    h, w = frame.shape[:2]
    x, y = np.rint(xy[:, 0]).astype(int), np.rint(xy[:, 1]).astype(int)
    ok = (x >= r) & (x < w - r) & (y >= r) & (y < h - r)
    if ok.mean() < 0.9:
        return False
    grey_frame = frame.mean(axis=2)
    off = np.arange(-r, r + 1)
    grey = grey_frame[y[ok][:, None, None] + off[None, :, None], x[ok][:, None, None] + off[None, None, :]]
    grey = grey.mean(axis=(1, 2))
    if grey.std() < 3:
        return False
    return np.corrcoef(grey, ref[ok])[0, 1] > threshold


def crop(frame: np.ndarray, rect: dict, scale: float) -> np.ndarray:
    """The panel `rect` (CSS px) of a frame taken at `scale`."""
    x0, y0 = int(rect["x"] * scale) + 2, int(rect["y"] * scale) + 2
    x1, y1 = int((rect["x"] + rect["width"]) * scale) - 2, int((rect["y"] + rect["height"]) * scale) - 2
    return frame[y0:y1, x0:x1].astype(np.int16)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    d = np.abs(a - b)
    return d.mean() < 1.0 and np.percentile(d, 99.5) < 24


def first_final_frame(frames, rect: dict, t_from: float, scale: float) -> float:
    """Time of the first frame after ``t_from`` from which the view stays as it ends."""
    after = [(t, crop(f, rect, scale)) for t, f in frames if t >= t_from]
    if not after:
        raise RuntimeError("no screen frames after the stroke")
    final = after[-1][1]
    t_first = after[-1][0]
    for t, f in reversed(after):
        if not same(f, final):
            break
        t_first = t
    return t_first


def mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def paint_timed(
    d: WidgetDriver, cast: Screencast, args, points: list, planes: tuple[str, ...]
) -> tuple[float, float, float]:
    """Paints ``points`` with the mouse; returns the wall-clock times of the mouse release, of the browser settling,
    and of the first screen frame from which every panel of ``planes`` shows its settled view."""
    d.scroll_into_view()
    if not args.no_screencast:
        cast.start()
    xy_s = d.to_screen(points)
    m = d.page.mouse
    m.move(*xy_s[0])
    m.down()
    for p in xy_s[1:]:
        m.move(*p, steps=3)
    m.up()
    t_up = time.time()
    t_idle = d.settle(timeout=300, quiet=1.0, pixels=False)
    if args.no_screencast:
        return t_up, t_idle, t_idle
    d.lab.pause(0.5)
    cast.stop()
    frames = cast.decoded()
    return t_up, t_idle, max(first_final_frame(frames, d.panel_rect(plane), t_up, cast.scale) for plane in planes)


def measure_first_stroke(d: WidgetDriver, cast: Screencast, args, planes: tuple[str, ...]) -> dict:
    """The first training of a fresh widget on a volume, as a user makes it: a stroke of class 1 (added from Python),
    the view left still until the kernel has computed the features of the planes in view, then a stroke of class 2
    painted with the mouse, timed from its release to all three panels showing the prediction; beside the kernel's
    own time for the same two strokes on a fresh Session without those features (cold)."""
    d.kexec("w.add_stroke(**first[0])")
    d.lab.wait_for(
        lambda: d.k("all(w.session.has_features(p) for p in PLANES)"), 120, "the features of the planes in view"
    )
    stroke = d.k("dict(first[1], points=np.asarray(first[1]['points']).tolist())")
    d.press(str(stroke["label"]))
    d.lab.wait_for(lambda: d.k("w.active_class") == stroke["label"], 20, "the active class")
    t_up, _, t_screen = paint_timed(d, cast, args, stroke["points"], planes)
    return {"screen": t_screen - t_up, "kernel_cold": d.k("kernel_first_stroke()")}


def measure_strokes(d: WidgetDriver, browser: Browser, cast: Screencast, args, planes: tuple[str, ...]) -> list[dict]:
    """Paints the notebook's ``measured`` strokes with the mouse (after its ``initial`` ones, added from Python) and
    times each from the mouse release to the screen showing the settled view on the panels showing ``planes``,
    beside the kernel's own ``kernel_reference(stroke)``."""
    lab, page = d.lab, d.page
    # page-side times (wall clock, as the kernel's): refresh messages received, frames drawn by Neuroglancer
    d.js("""(() => {
      const T = window.__benchTimes = { refresh: [], draw: [] };
      h.transport.on("refresh", (c) => T.refresh.push([Date.now() / 1000, c.layers, (c.keys || []).length]));
      h.viewer.display.updateFinished.add(() => T.draw.push(Date.now() / 1000));
      return true;
    })()""")
    d.kexec("for s in initial:\n    w.add_stroke(**s)")
    d.settle(timeout=300)
    strokes = d.k("[dict(s, points=np.asarray(s['points']).tolist()) for s in measured]")
    rows = []
    if args.trace:
        browser.browser.start_tracing(
            page=page,
            path=args.trace,
            screenshots=False,
            categories=[
                "devtools.timeline",
                "disabled-by-default-devtools.timeline",
                "v8.execute",
                "blink",
                "gpu",
                "cc",
                "viz",
                "toplevel",
                "disabled-by-default-devtools.timeline.frame",
            ],
        )
    for i in range(args.repeats):
        stroke = strokes[i % len(strokes)]
        d.press(str(stroke["label"]))
        lab.wait_for(lambda: d.k("w.active_class") == stroke["label"], 20, "the active class")
        d.kexec("EVENTS.clear(); SERVED.clear(); PUSHED.clear()")
        d.js("(() => { window.__benchTimes.refresh.length = 0; window.__benchTimes.draw.length = 0; })()")
        t_up, t_idle, t_screen = paint_timed(d, cast, args, stroke["points"], planes)
        events = d.k("EVENTS")
        served = d.k("[(a, b, k, n) for a, b, k, n in SERVED]")
        pushed = d.k("PUSHED")
        page_times = d.js("window.__benchTimes")
        t_sent = next((t for t, layers, _, _ in pushed if "probabilities" in layers), float("nan"))
        n_pushed = sum(n for _, layers, n, _ in pushed)
        push_bytes = sum(b for *_, b in pushed)
        t_recv = next((t for t, layers, _ in page_times["refresh"] if "probabilities" in layers), float("nan"))
        t_drawn = max((t for t in page_times["draw"] if t >= t_recv), default=float("nan"))
        t_labels = next((t for e, t in events if e == "labels"), float("nan"))
        t_trained = max((t for e, t in events if e == "trained"), default=float("nan"))
        pred_reads = [
            (a, b, sum(1 for key in k if key.startswith("predictions/") and "/." not in key)) for a, b, k, n in served
        ]
        pred_reads = [r for r in pred_reads if r[2]]
        pred_first = min((b for a, b, _ in pred_reads), default=float("nan"))
        pred_chunks = sum(c for _, _, c in pred_reads)
        pred_busy = sum(b - a for a, b, _ in pred_reads)
        pred_bytes = sum(sum(n for key, n in zip(k, ns) if key.startswith("predictions/")) for a, b, k, ns in served)
        # the kernel alone, same stroke, warm caches
        d.kexec("_st = measured[%d]" % (i % len(strokes)))
        kernel_s = d.k("kernel_reference(_st)")
        rows.append(
            dict(
                total=t_screen - t_up,
                idle=t_idle - t_up,
                kernel=kernel_s,
                to_kernel=t_labels - t_up,
                trained=t_trained - t_up,
                sent=t_sent - t_up,
                recv=t_recv - t_up,
                drawn=t_drawn - t_up,
                pushed=n_pushed,
                push_bytes=push_bytes,
                pred_bytes=pred_bytes,
                first=pred_first - t_up,
                chunks=pred_chunks,
                reads=len(pred_reads),
                busy=pred_busy,
            )
        )
    return rows


def report_strokes(rows: list[dict], refresh_stats: dict, args, title: str, predicted: str, short: str) -> None:
    """Prints the strokes measured by :func:`measure_strokes`: ``predicted`` says what the kernel-only baseline
    predicts (``short`` in the median line)."""
    print(title)
    print(
        f"   {'repeat':>6} {'screen':>7} {'kernel-only':>11} {'added':>7} | {'labels':>6} {'trained':>7} "
        f"{'sent':>6} {'recv':>6} {'drawn':>6} {'pushed':>14} {'asked':>14}"
    )
    for i, r in enumerate(rows):
        print(
            f"   {i:>6} {r['total']:7.3f} {r['kernel']:11.3f} {r['total'] - r['kernel']:7.3f} | "
            f"{r['to_kernel']:6.3f} {r['trained']:7.3f} {r['sent']:6.3f} {r['recv']:6.3f} {r['drawn']:6.3f} "
            f"{r['pushed']:>3} ({mb(r['push_bytes']):>8}) {r['chunks']:>3} ({mb(r['pred_bytes']):>8})"
        )
    how = (
        "browser idle after the release (--no-screencast)"
        if args.no_screencast
        else "first screencast frame equal to the settled view"
    )
    print(
        f"   screen: {how}; kernel-only: the same stroke on a second Session with warm caches (add, train,\n"
        f"   {predicted}); labels/trained: the session's events; sent/recv: the refresh with the new\n"
        "   predictions leaves the kernel / reaches the page; drawn: Neuroglancer's last frame after it; pushed: chunks\n"
        "   sent with refreshes; asked: prediction chunks the browser still asked for"
    )
    med_total = statistics.median(r["total"] for r in rows)
    med_kernel = statistics.median(r["kernel"] for r in rows)
    added = med_total - med_kernel
    print(
        f"   median: mouse release -> screen {med_total:.3f} s; kernel alone (stroke -> train -> {short}, "
        f"baseline) {med_kernel:.3f} s; browser path adds {added:.3f} s (target <= 0.3 s: "
        f"{'met' if added <= 0.3 else 'NOT met'})"
    )
    print(
        f"   refreshes (whole run): {refresh_stats['updatedInPlace']} arrays updated in place, "
        f"{refresh_stats['reloaded']} reloaded"
        + (f" (last because {refresh_stats['lastReloadReason']})" if refresh_stats["reloaded"] else "")
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="measured strokes (default 3)")
    ap.add_argument(
        "--cast-scale",
        type=float,
        default=0.5,
        help="screencast frames at this fraction of the viewport (default 0.5: encoding full-size frames "
        "at every paint takes CPU time from the page under test on 2 cores)",
    )
    ap.add_argument("--cast-quality", type=int, default=80, help="JPEG quality of the screencast (default 80)")
    ap.add_argument(
        "--no-screencast",
        action="store_true",
        help="time strokes to the browser's idle state instead of screen frames (screencast costs CPU)",
    )
    ap.add_argument(
        "--trace",
        metavar="FILE.json",
        help="write a Chrome performance trace of the measured strokes (open it in chrome://tracing or "
        "https://ui.perfetto.dev) to see which thread of the page spends the time",
    )
    ap.add_argument(
        "--volume",
        action="store_true",
        help="measure strokes on a 120x512x512 volume in the four-panel layout instead (section 1 only)",
    )
    args = ap.parse_args(argv)
    if args.volume:
        return main_volume(args)

    with LabServer() as server, Browser(viewport=(1720, 1250)) as browser:
        server.write_notebook("bench.ipynb", NOTEBOOK)
        lab = browser.open_notebook(server, "bench.ipynb")
        page = lab.page
        # The widget's height is a CSS variable; make the viewer tall enough for the whole image at ~1:1.
        page.add_style_tag(content=".ilastik-widget { --ilastik-height: %dpx !important; }" % VIEW_HEIGHT)
        lab.run_cell(0)
        lab.kernel_exec("print('setup done')", timeout=600)
        if lab.cell_errors():
            raise RuntimeError("\n".join(lab.cell_errors()))

        cast = Screencast(page, quality=args.cast_quality, scale=args.cast_scale)
        k = cast.scale  # frame pixels per CSS pixel
        # A smoothed reference at the sample points: what a coarse pyramid level shows too.
        ref_smooth = np.asarray(
            lab.kernel_json(
                "from scipy import ndimage as _n; print(json.dumps(_n.gaussian_filter(image, 4)[16::32, 16::32].tolist()))"
            ),
            float,
        ).ravel()

        # ---- 3. time to first image: the widget ---------------------------------------------------------------
        cast.start()
        t_run = time.time()
        lab.run_cell(1)
        d = WidgetDriver(lab, "w", timeout=300)
        d.settle(timeout=300, quiet=1.0, pixels=False)
        lab.pause(0.5)
        cast.stop()
        rect = d.panel_rect()
        xy = d.to_screen(pattern_points())
        frames = cast.decoded()
        t_first = next((t for t, f in frames if recognisable(f, xy * k, ref_smooth, r=max(2, round(6 * k)))), None)
        widget_first = None if t_first is None else t_first - t_run
        shown = d.k("w.viewer_state")
        scale = rect["height"] / SIZE

        # ---- 2. raw throughput -----------------------------------------------------------------------------------
        served = d.k("[(a, b, k, n) for a, b, k, n in SERVED]")
        raw = [(a, b, sum(n for key, n in zip(k, ns) if key.startswith("raw/"))) for a, b, k, ns in served]
        raw_bytes = sum(n for _, _, n in raw)
        t_raw0 = min(a for a, _, n in raw if n) if raw_bytes else None
        t_raw_screen = first_final_frame(frames, rect, t_raw0, k) if t_raw0 else None
        viewer_mbps = raw_bytes / (t_raw_screen - t_raw0) / 1e6 if t_raw0 and t_raw_screen > t_raw0 else float("nan")

        lab.run_cell(2)
        # wait until the echo's view is up: small messages until one is answered
        lab.wait_for(
            lambda: (
                lab.kernel_exec("echo.send({'n': 0}, [b'x'])") is not None and lab.kernel_eval("len(echo.acks)") > 0
            ),
            60,
            "the echo widget's view",
        )
        one_msg = []
        for _ in range(3):
            n0 = lab.kernel_eval("len(echo.acks)")
            t_send = lab.kernel_json(
                "_p = np.random.default_rng(0).bytes(%d); _t = time.time(); echo.send({'n': len(_p)}, [_p]); "
                "print(json.dumps(_t))" % max(raw_bytes, 1)
            )
            lab.wait_for(lambda: lab.kernel_eval("len(echo.acks)") > n0, 60, "the echo's ack")
            t_ack, content = lab.kernel_eval("echo.acks[-1]")
            assert content["n"] == max(raw_bytes, 1)
            one_msg.append(t_ack - t_send)
        one_msg_s = statistics.median(one_msg)
        one_msg_mbps = max(raw_bytes, 1) / one_msg_s / 1e6

        # ---- 1. stroke -> prediction on screen --------------------------------------------------------------------
        rows = measure_strokes(d, browser, cast, args, ("xy",))
        if args.trace:
            browser.browser.stop_tracing()
            print(f"trace of the strokes written to {args.trace}")
        refresh_stats = d.js("h.stats()")
        widget_size = d.k("list(w.session.spatial_shape)")

        # ---- 3. baseline: the same image as a PNG in ipywidgets.Image -------------------------------------------
        cast.start()
        t_run_png = time.time()
        lab.run_cell(3)
        img = page.locator(".jp-OutputArea-output img").last
        img.wait_for(state="visible", timeout=60_000)
        lab.pause(1.5)
        cast.stop()
        # run_cell scrolled the cell to the top before it ran; the frames show the image where it is now
        box = img.bounding_box()
        pts = pattern_points()
        sx, sy = box["width"] / SIZE, box["height"] / SIZE
        xy_png = np.stack([box["x"] + (pts[:, 1] + 0.5) * sx, box["y"] + (pts[:, 0] + 0.5) * sy], 1)
        png_frames = cast.decoded()
        t_png = next(
            (t for t, f in png_frames if recognisable(f, xy_png * k, ref_smooth, r=max(2, round(6 * k)))), None
        )
        png_first = None if t_png is None else t_png - t_run_png
        png_bytes = lab.kernel_eval("len(PNG)")

    # ---- report ----------------------------------------------------------------------------------------------------
    def fmt(x, unit="s"):
        return "n/a" if x is None or x != x else f"{x:.3f} {unit}"

    print(
        f"bench_browser: JupyterLab + headless Chromium (SwiftShader), image {widget_size}, viewer panel "
        f"{rect['width']:.0f}x{rect['height']:.0f} CSS px ({scale:.2f} px per image pixel, "
        f"zoom state {shown.get('crossSectionScale')})"
    )
    print()
    report_strokes(
        rows,
        refresh_stats,
        args,
        "1. stroke -> new prediction visible (whole 1024x1024 view), seconds after the mouse release",
        "predict the whole image",
        "predict all",
    )
    print()
    print("2. raw data kernel -> screen")
    print(
        f"   viewer: {mb(raw_bytes)} of image chunks in {fmt(t_raw_screen - t_raw0 if t_raw0 else None)} "
        f"(first chunk request -> image settled on screen) = {viewer_mbps:.1f} MB/s"
    )
    print(
        f"   baseline, the same bytes as one widget message (send -> ack): {fmt(one_msg_s)} = "
        f"{one_msg_mbps:.1f} MB/s; viewer/baseline = {viewer_mbps / one_msg_mbps:.2f}"
    )
    print()
    print("3. time to first image after display(w), 1024x1024")
    print(f"   widget: {fmt(widget_first)} (Run Cell -> image recognisable on screen)")
    print(f"   baseline, ipywidgets.Image of the same image as PNG ({mb(png_bytes)}): {fmt(png_first)}")
    print(
        f"   ratio widget/baseline: {'n/a' if not (widget_first and png_first) else f'{widget_first / png_first:.2f}'}"
    )
    return 0


def main_volume(args) -> int:
    """Section 1 on a volume: strokes on the xy panel -> the new prediction on all three slice panels."""
    planes = ("xy", "xz", "yz")
    with LabServer() as server, Browser(viewport=(1720, 1250)) as browser:
        server.write_notebook("bench_volume.ipynb", VOLUME_NOTEBOOK)
        lab = browser.open_notebook(server, "bench_volume.ipynb")
        lab.run_cell(0)
        lab.kernel_exec("print('setup done')", timeout=600)
        if lab.cell_errors():
            raise RuntimeError("\n".join(lab.cell_errors()))
        lab.run_cell(1)
        d = WidgetDriver(lab, "w", timeout=300)
        d.settle(timeout=300, quiet=1.0, pixels=False)
        cast = Screencast(lab.page, quality=args.cast_quality, scale=args.cast_scale)
        first = measure_first_stroke(d, cast, args, planes)
        rows = measure_strokes(d, browser, cast, args, planes)
        if args.trace:
            browser.browser.stop_tracing()
            print(f"trace of the strokes written to {args.trace}")
        refresh_stats = d.js("h.stats()")
        rects = {plane: d.panel_rect(plane) for plane in planes}
        state = d.k("w.viewer_state")
        shape = d.k("list(w.session.spatial_shape)")
        dtype = d.k("str(w.session.image.dtype)")
        chunks = d.k("list(w.chunk_server.chunk_shape)")
    panels = ", ".join(f"{p} {r['width']:.0f}x{r['height']:.0f}" for p, r in rects.items())
    print(
        f"bench_browser --volume: JupyterLab + headless Chromium (SwiftShader), volume {shape} {dtype}, "
        f"layout {state.get('layout')}, panels (CSS px) {panels}, zoom {state.get('crossSectionScale', 0):.2f} "
        f"voxels per px, plane-shaped chunks of {chunks[1]}x{chunks[2]}"
    )
    print()
    report_strokes(
        rows,
        refresh_stats,
        args,
        "1. stroke on the xy panel -> new prediction on all three slice panels, seconds after the mouse release",
        "predict the xy, xz and yz planes the panels show",
        "predict the 3 planes",
    )
    print()
    print(
        "2. the first training: mouse release of the first stroke of a second class -> prediction on all three panels,\n"
        "   the features of the planes in view computed while the first class was painted\n"
        f"   screen {first['screen']:.3f} s; the kernel alone, cold (a fresh Session: the same two strokes, train,\n"
        f"   predict the 3 planes, no features computed ahead) {first['kernel_cold'][0]:.3f} s, meanwhile\n"
        f"   {first['kernel_cold'][1]:.3f} s of system CPU time on its threads (one measurement)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
