// Package conditions that choose Neuroglancer's modules, shared by the widget's build (build.mjs) and the unit tests
// (test/run.mjs) so both resolve the same files: only the data sources and kvstores the widget uses: zarr (our mem://
// store, and zarr v2 / v3 / OME-Zarr on a web server), and for raw images the browser reads straight from their URL
// (serving/remote_raw.py) precomputed, N5 and Deep Zoom, over http(s) (byte ranges and gzip for sharded volumes); the
// image, segmentation and annotation layer types are on by default. tsconfig.json names those the type checker needs.
export const conditions = [
  "neuroglancer/datasource:none_by_default",
  "neuroglancer/datasource/zarr:enabled",
  "neuroglancer/datasource/precomputed:enabled",
  "neuroglancer/datasource/n5:enabled",
  "neuroglancer/datasource/deepzoom:enabled",
  "neuroglancer/kvstore:none_by_default",
  "neuroglancer/kvstore/http:enabled",
  "neuroglancer/kvstore/gzip:enabled",
  "neuroglancer/kvstore/byte_range:enabled",
];
