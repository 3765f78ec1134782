// Progress of the kernel's long work (the `progress` trait: ilastik_widget/widget/progress.py and export_task.py) in
// words and as a fraction. The panel shows it as a still bar whose width changes with each update (at most two a
// second), never as a moving animation: on a page without a GPU every animated frame costs CPU the kernel needs.

/** The `progress` trait: empty when nothing is pending. */
export interface Progress {
  task: string;
  done: number;
  total: number;
  seconds_left: number | null;
}

/** The progress trait's value, or undefined when nothing is pending (or the value is malformed). */
export function progressOf(value: any): Progress | undefined {
  const done = Number(value?.done);
  const total = Number(value?.total);
  if (!Number.isFinite(done) || !Number.isFinite(total) || total <= 0 || done >= total || done < 0) return undefined;
  const left = value?.seconds_left;
  return {
    task: typeof value?.task === "string" ? value.task : "",
    done,
    total,
    seconds_left: typeof left === "number" && Number.isFinite(left) ? left : null,
  };
}

/** Done as a fraction of the total, from 0 to 1. */
export function progressFraction(p: Progress): number {
  return Math.min(1, Math.max(0, p.done / p.total));
}

function duration(seconds: number): string {
  return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
}

const UNITS: Record<string, [string, string]> = {
  predicting: ["chunk", "chunks"],
  exporting: ["step", "steps"],
};

/** "Predicting 3 of 12 chunks · about 4 s left". */
export function progressText(p: Progress): string {
  const [one, many] = UNITS[p.task] ?? ["", ""];
  const unit = p.total === 1 ? one : many;
  const task = p.task ? p.task[0].toUpperCase() + p.task.slice(1) : "Working";
  let text = `${task} ${p.done} of ${p.total}${unit ? ` ${unit}` : ""}`;
  if (p.seconds_left !== null && p.seconds_left >= 1) text += ` · about ${duration(p.seconds_left)} left`;
  return text;
}
