// The arithmetic of the panel's display controls: what the kernel says about the raw layer (`source_info.display`,
// ilastik_widget/widget/state.py `display_info`), each channel's slider span, edits of `contrast_limits` that keep
// low < high, and the histogram drawn behind the two handles. Pure functions: they run without a browser (js/test).

/** One channel's histogram (serving/contrast.py `histogram`): `counts` of equal bins over `range`. */
export interface Histogram {
  range: [number, number];
  counts: number[];
  below: number;
  above: number;
  min: number;
  max: number;
}

/** How the raw layer shows the image. */
export interface DisplayInfo {
  /** The raw layer's data type ("uint8", "uint16", "float32", ...). */
  dtype: string;
  /** One grey channel, RGB colour, or a composite of coloured channels. */
  mode: "grey" | "rgb" | "composite";
  /** Channels shown (1 for grey). */
  channels: number;
  /** Each channel's automatic window (what "Auto" restores). */
  auto: ([number, number] | undefined)[];
  histograms: (Histogram | undefined)[];
}

export type Limits = [number, number][];

function finite(value: unknown): value is number {
  return typeof value === "number" && Number.isFinite(value);
}

function histogramOf(value: any): Histogram | undefined {
  const range = value?.range;
  const counts = value?.counts;
  if (!Array.isArray(range) || range.length !== 2 || !range.every(finite) || !(range[0] < range[1])) return undefined;
  if (!Array.isArray(counts) || counts.length === 0 || !counts.every(finite)) return undefined;
  return {
    range: [range[0], range[1]],
    counts,
    below: finite(value.below) ? value.below : 0,
    above: finite(value.above) ? value.above : 0,
    min: finite(value.min) ? value.min : range[0],
    max: finite(value.max) ? value.max : range[1],
  };
}

/** `source_info.display`, or undefined when it is missing or malformed (an older kernel). */
export function displayInfo(sourceInfo: any): DisplayInfo | undefined {
  const d = sourceInfo?.display;
  if (typeof d?.dtype !== "string" || !["grey", "rgb", "composite"].includes(d?.mode)) return undefined;
  const channels = Number(d.channels);
  if (!Number.isInteger(channels) || channels < 1) return undefined;
  const histograms = Array.isArray(d.histograms) ? d.histograms : [];
  return {
    dtype: d.dtype,
    mode: d.mode,
    channels,
    auto: limitsOf(d.auto, channels).map((pair) => (pair === undefined ? undefined : [pair[0], pair[1]])),
    histograms: Array.from({ length: channels }, (_, i) => histogramOf(histograms[i])),
  };
}

/** Whether values of `dtype` are whole numbers (the sliders step by 1). */
export function isInteger(dtype: string): boolean {
  return /^u?int/.test(dtype);
}

/** `contrast_limits` as the panel uses it: undefined entries where a channel has no valid window. */
export function limitsOf(value: unknown, channels: number): (readonly [number, number] | undefined)[] {
  const list = Array.isArray(value) ? value : [];
  return Array.from({ length: channels }, (_, i) => {
    const pair = list[i];
    return Array.isArray(pair) && pair.length === 2 && pair.every(finite) && pair[0] < pair[1]
      ? ([pair[0], pair[1]] as const)
      : undefined;
  });
}

/**
 * The values a channel's slider covers: the histogram's span, widened to hold the current window (a window set from
 * Python beyond the histogram is still reachable and shown).
 */
export function sliderSpan(histogram: Histogram | undefined, window: readonly [number, number]): [number, number] {
  let [lo, hi] = histogram?.range ?? window;
  lo = Math.min(lo, window[0]);
  hi = Math.max(hi, window[1]);
  if (!(hi > lo)) hi = lo + 1;
  return [lo, hi];
}

/** The slider's step: 1 for integer data, else a thousandth of the span. */
export function sliderStep(span: readonly [number, number], integer: boolean): number {
  if (integer) return 1;
  const step = (span[1] - span[0]) / 1000;
  // a round number (1, 2 or 5 times a power of ten) so typed-in and shown values stay short
  const power = 10 ** Math.floor(Math.log10(step));
  const mantissa = step / power;
  return (mantissa < 2 ? 1 : mantissa < 5 ? 2 : 5) * power;
}

/**
 * `limits` with one end of channel `channel`'s window set to `value` (`end` 0: low, 1: high); the other end moves
 * by `step` if needed so that low < high stays true. A new array: the trait's value is never edited in place.
 */
export function withLimit(limits: Limits, channel: number, end: 0 | 1, value: number, step: number): Limits {
  const out = limits.map((pair) => [pair[0], pair[1]] as [number, number]);
  const pair = out[channel];
  if (pair === undefined || !Number.isFinite(value)) return out;
  pair[end] = value;
  const gap = step > 0 ? step : 1e-6;
  if (pair[0] >= pair[1]) {
    if (end === 0) pair[1] = pair[0] + gap;
    else pair[0] = pair[1] - gap;
  }
  return out;
}

/** A value as the panel shows it: whole numbers for integer data, else 4 significant digits. */
export function formatValue(value: number, integer: boolean): string {
  if (!Number.isFinite(value)) return String(value);
  if (integer || Number.isInteger(value)) return String(Math.round(value));
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

/**
 * The histogram as an SVG path in a `width` x `height` box: one step per bin, counts on a log scale (a few debris
 * pixels and a large background both stay visible), the tallest bin reaching the top.
 */
export function histogramPath(counts: readonly number[], width: number, height: number): string {
  const n = counts.length;
  if (n === 0) return "";
  const top = Math.log1p(Math.max(...counts.map((c) => Math.max(0, c))));
  const y = (c: number) => (top > 0 ? height - (Math.log1p(Math.max(0, c)) / top) * height : height);
  const r = (v: number) => Math.round(v * 100) / 100;
  const parts = [`M0 ${height}`];
  counts.forEach((c, i) => {
    const yi = r(y(c));
    parts.push(`L${r((i / n) * width)} ${yi}`, `L${r(((i + 1) / n) * width)} ${yi}`);
  });
  parts.push(`L${width} ${height}Z`);
  return parts.join(" ");
}

/** Where `value` sits along a span, from 0 to 1 (clamped). */
export function fraction(value: number, span: readonly [number, number]): number {
  return Math.min(1, Math.max(0, (value - span[0]) / (span[1] - span[0])));
}

/** Channel names as the panel lists them. */
export function channelName(mode: DisplayInfo["mode"], channel: number): string {
  if (mode === "rgb") return ["Red", "Green", "Blue", "Alpha"][channel] ?? `Channel ${channel}`;
  if (mode === "grey") return "Intensity";
  return `Channel ${channel}`;
}

/**
 * A function that calls `fn` at most every `ms` milliseconds with the latest arguments (the first call at once, the
 * last one always); `flush()` runs a pending call now.
 */
export function throttle<A extends unknown[]>(fn: (...args: A) => void, ms: number): ((...args: A) => void) & {
  flush(): void;
  cancel(): void;
} {
  let last = -Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending: A | undefined;
  const run = () => {
    timer = undefined;
    if (pending === undefined) return;
    const args = pending;
    pending = undefined;
    last = Date.now();
    fn(...args);
  };
  const throttled = (...args: A) => {
    pending = args;
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      if (timer !== undefined) clearTimeout(timer);
      run();
    } else if (timer === undefined) {
      timer = setTimeout(run, wait);
    }
  };
  throttled.flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    run();
  };
  throttled.cancel = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    pending = undefined;
  };
  return throttled;
}
