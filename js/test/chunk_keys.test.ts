// The browser's zarr key parser reads the keys of tests/chunk_key_cases.json as the cases say; the kernel's parser
// (ilastik_widget/serving/chunk_keys.py) is tested on the same file by tests/test_chunk_keys.py, so the two agree.

import assert from "node:assert/strict";
import { test } from "node:test";
import shared from "../../tests/chunk_key_cases.json";
import {
  BoxKey,
  ChunkKey,
  MetadataKey,
  arrayPath,
  boxKeyAt,
  chunkKeyAt,
  parseArrayPath,
  parseKey,
} from "../src/data/chunk_keys.js";

interface Case {
  key: unknown;
  parsed: Record<string, unknown> | null;
}

const cases = shared.cases as Case[];

function asJson(parsed: ChunkKey | BoxKey | MetadataKey | null): Record<string, unknown> | null {
  if (parsed === null) return null;
  if (parsed instanceof ChunkKey) {
    return { type: "chunk", array: parsed.array, level: parsed.level, index: [...parsed.index], layout: parsed.layout };
  }
  if (parsed instanceof BoxKey) {
    const box = parsed.box.map((range) => [...range]);
    return { type: "box", array: parsed.array, level: parsed.level, box, layout: parsed.layout };
  }
  return { type: "metadata", array: parsed.array, name: parsed.name, level: parsed.level, layout: parsed.layout };
}

test("parseKey reads every shared case as expected, and a parsed key written back is the key", () => {
  assert.ok(cases.length >= 60, `${cases.length} cases`);
  const wrong: string[] = [];
  for (const { key, parsed } of cases) {
    const got = parseKey(key);
    if (JSON.stringify(asJson(got)) !== JSON.stringify(parsed)) {
      wrong.push(`${JSON.stringify(key)}: ${JSON.stringify(asJson(got))}, expected ${JSON.stringify(parsed)}`);
    } else if (got !== null && String(got) !== key) {
      wrong.push(`${JSON.stringify(key)} is written back as ${JSON.stringify(String(got))}`);
    }
  }
  assert.deepEqual(wrong, []);
});

test("the shared cases have chunks, boxes and metadata of every array, and malformed keys", () => {
  const kinds = new Set(cases.filter((c) => c.parsed !== null).map((c) => `${c.parsed!.type} ${c.parsed!.array}`));
  assert.equal(kinds.size, 12, [...kinds].join(", "));
  assert.ok(cases.filter((c) => c.parsed === null).length >= 30);
});

test("ChunkKey.address and BoxKey.address are the key without array and layout", () => {
  const key = parseKey("predictions/4/1/2.3.0");
  assert.ok(key instanceof ChunkKey);
  assert.equal(key.address, "1/2.3.0");
  assert.equal(String(new ChunkKey("predictions", 1, [2, 3, 0], 5)), "predictions/5/1/2.3.0");
  const box = parseKey("labels/2/0-32_32-64_5-6");
  assert.ok(box instanceof BoxKey);
  assert.deepEqual(box.box, [[5, 6], [32, 64], [0, 32]], "array order, z first");
  assert.equal(box.address, "2/0-32_32-64_5-6");
  assert.equal(String(new BoxKey("predictions", 0, [[0, 1], [2, 4], [6, 9]], 3)), "predictions/3/0/6-9_2-4_0-1");
});

test("arrayPath: raw, labels, predictions/<layout>, objects/<version>; anything else is refused", () => {
  assert.equal(arrayPath("raw"), "raw");
  assert.equal(arrayPath("predictions", 0), "predictions/0");
  assert.equal(arrayPath("objects", 4), "objects/4");
  assert.throws(() => arrayPath("predictions"), /number in their path/);
  assert.throws(() => arrayPath("objects"), /number in their path/);
  assert.throws(() => arrayPath("labels", 1), /number in their path/);
  assert.throws(() => arrayPath("image" as "raw"), /unknown array "image"/);
});

test("parseArrayPath: the array and layout of a group's path, with or without a final slash", () => {
  assert.deepEqual(parseArrayPath("labels"), { array: "labels", layout: null });
  assert.deepEqual(parseArrayPath("predictions/3/"), { array: "predictions", layout: 3 });
  assert.equal(parseArrayPath("predictions"), null, "no layout");
  assert.equal(parseArrayPath("raw/0"), null, "a level, not a group");
  assert.equal(parseArrayPath("https://example.org/raw"), null);
});

test("chunkKeyAt: the chunk at a grid index of a level's path (a chunk source's URL path)", () => {
  assert.equal(String(chunkKeyAt("predictions/2/0/", [1, 2, 0])), "predictions/2/0/1.2.0");
  assert.equal(String(chunkKeyAt("labels/1", [3, 4])), "labels/1/3.4");
  assert.equal(chunkKeyAt("labels/", [3, 4]), null, "no level");
  assert.equal(chunkKeyAt("predictions/0/", [0, 0, 0]), null, "a layout but no level");
  assert.equal(chunkKeyAt("raw/0/", [1]), null, "one index is no chunk of a 2D or 3D array");
});

test("boxKeyAt: the precomputed chunk covering a box ((z, y, x) ranges) of a level's path", () => {
  const key = boxKeyAt("predictions/2/1/", [[5, 6], [0, 256], [256, 300]]);
  assert.ok(key instanceof BoxKey);
  assert.equal(String(key), "predictions/2/1/256-300_0-256_5-6", "written x first");
  assert.equal(String(boxKeyAt("labels/0", [[0, 120], [7, 8], [0, 256]])), "labels/0/0-256_7-8_0-120");
  assert.equal(boxKeyAt("labels/", [[0, 1], [0, 1], [0, 1]]), null, "no level");
  assert.equal(boxKeyAt("predictions/0/", [[0, 1], [0, 1], [0, 1]]), null, "a layout but no level");
  assert.equal(boxKeyAt("labels/0/", [[3, 3], [0, 1], [0, 1]]), null, "an empty range");
  assert.equal(boxKeyAt("labels/0/", [[0, 1], [0, 1]]), null, "a box of a volume has three ranges");
});
