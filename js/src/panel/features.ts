// The feature matrix of the panel: the table the kernel describes (ilastik_widget/core/features.py
// `feature_table()`, sent in `source_info.feature_table`) and edits of a selection (`FeatureSelection.to_dict()`), which
// the kernel validates. Pure functions: they run without a browser (js/test).

/** One feature of the matrix, as `feature_table()` describes it. */
export interface FeatureInfo {
  name: string;
  title: string;
  description: string;
  /** The scales this feature exists at (a subset of FeatureTable.scales). */
  scales: number[];
  /** Output channels per input channel, with 2D and with 3D filters. */
  channels?: { "2d"?: number; "3d"?: number };
}

/** The feature matrix the kernel sends in `source_info.feature_table`; the panel keeps no copy of it. */
export interface FeatureTable {
  scales: number[];
  /** The scales that may be computed "in 2D" (slice-wise) on volumes: ilastik's "in 2D" column. */
  scales2d: number[];
  features: FeatureInfo[];
}

/** Scale as written in test ids and in Python's repr: "0.3", "1.0", "10.0". */
export function scaleText(scale: number): string {
  return Number.isInteger(scale) ? scale.toFixed(1) : String(scale);
}

/** Two scales are one within float rounding. */
export function sameScale(a: number, b: number): boolean {
  return Math.abs(a - b) < 1e-6;
}

function isNumberList(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((v) => typeof v === "number" && Number.isFinite(v));
}

/** The feature table in `source_info`, or undefined when it is missing or malformed (e.g. an older kernel). */
export function featureTable(sourceInfo: any): FeatureTable | undefined {
  const table = sourceInfo?.feature_table;
  if (!isNumberList(table?.scales) || table.scales.length === 0) return undefined;
  if (!Array.isArray(table.features) || table.features.length === 0) return undefined;
  const features: FeatureInfo[] = [];
  for (const f of table.features) {
    if (typeof f?.name !== "string" || !isNumberList(f.scales)) return undefined;
    features.push({
      name: f.name,
      title: typeof f.title === "string" ? f.title : f.name,
      description: typeof f.description === "string" ? f.description : "",
      scales: f.scales,
      channels: typeof f.channels === "object" && f.channels !== null ? f.channels : undefined,
    });
  }
  // an older kernel without the column: no scale can be switched to 2D
  const scales2d = isNumberList(table.scales_2d) ? table.scales_2d : [];
  return { scales: table.scales, scales2d, features };
}

/** Whether `selection` (FeatureSelection.to_dict()) has (feature, scale) switched on. */
export function featureEnabled(selection: any, feature: string, scale: number): boolean {
  const scales: unknown = selection?.features?.[feature];
  return Array.isArray(scales) && scales.some((s) => sameScale(Number(s), scale));
}

/** The scales of `selection` computed in 2D on volumes (`FeatureSelection.in_2d`; none when it does not say). */
export function in2d(selection: any): number[] {
  const scales: unknown = selection?.in_2d;
  return Array.isArray(scales) ? scales.map(Number).filter((s) => Number.isFinite(s)) : [];
}

/** Whether `selection` computes the filters at `scale` in 2D. */
export function scaleIn2d(selection: any, scale: number): boolean {
  return in2d(selection).some((s) => sameScale(s, scale));
}

function copyFeatures(selection: any): Record<string, number[]> {
  const features: Record<string, number[]> = {};
  const current: unknown = selection?.features;
  if (typeof current === "object" && current !== null) {
    for (const [f, scales] of Object.entries(current)) features[f] = Array.isArray(scales) ? scales.map(Number) : [];
  }
  return features;
}

/** A copy of `selection` with (feature, scale) switched `on` (its 2D scales kept); the kernel validates the result. */
export function withFeature(selection: any, feature: string, scale: number, on: boolean): any {
  const features = copyFeatures(selection);
  const rest = (features[feature] ?? []).filter((s) => !sameScale(s, scale));
  if (on) rest.push(scale);
  features[feature] = rest.sort((a, b) => a - b);
  return { features, in_2d: in2d(selection) };
}

/** A copy of `selection` with the filters at `scale` computed in 2D on volumes (`on`) or in 3D. */
export function with2d(selection: any, scale: number, on: boolean): any {
  const rest = in2d(selection).filter((s) => !sameScale(s, scale));
  if (on) rest.push(scale);
  return { features: copyFeatures(selection), in_2d: rest.sort((a, b) => a - b) };
}

/** Every cell of `table` switched on, or none; the 2D scales of `selection` are kept. */
export function allFeatures(table: FeatureTable, on: boolean, selection?: any): any {
  const features: Record<string, number[]> = {};
  for (const f of table.features) features[f.name] = on ? [...f.scales] : [];
  return { features, in_2d: in2d(selection) };
}

/** The channels a feature adds, in words for a tooltip ("" when the table does not say). */
export function channelText(f: FeatureInfo): string {
  const c2 = f.channels?.["2d"];
  const c3 = f.channels?.["3d"];
  if (c2 === undefined || c3 === undefined) return "";
  if (c2 === c3) return ` (${c2} channel${c2 === 1 ? "" : "s"})`;
  return ` (${c2} channels in 2D, ${c3} in 3D)`;
}
