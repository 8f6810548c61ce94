// The package: `npm pack` ships every module herald.js reaches, its types
// and guide, and the modules import nothing but each other (zero runtime
// dependencies, so the Worker can serve them as they are).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const dir = fileURLToPath(new URL("..", import.meta.url));

/** Every module reachable from herald.js by static imports. */
function reachable(entry) {
  const seen = new Set();
  const visit = (file) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(new URL(file, new URL("../", import.meta.url)), "utf8");
    for (const [, spec] of source.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/gm)) {
      assert.ok(spec.startsWith("./"), `${file} imports "${spec}": only relative modules are allowed`);
      visit(spec.slice(2));
    }
  };
  visit(entry);
  return seen;
}

test("npm pack ships the modules, the types and the guide", () => {
  const [pack] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: dir, encoding: "utf8" }));
  const files = new Set(pack.files.map((f) => f.path));
  const modules = reachable("herald.js");
  assert.ok(modules.size >= 8, [...modules].join(", "));
  for (const f of [...modules, "herald.d.ts", "README.md", "package.json"]) assert.ok(files.has(f), `${f} missing from the package`);
  assert.ok(![...files].some((f) => f.startsWith("test/")), "tests are not shipped");
  const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"));
  assert.equal(manifest.dependencies, undefined, "no runtime dependencies");
  assert.equal(manifest.types, "./herald.d.ts");
});

test("every export has a declaration", async () => {
  const mod = await import("../herald.js");
  const dts = readFileSync(new URL("../herald.d.ts", import.meta.url), "utf8");
  for (const name of Object.keys(mod)) {
    assert.match(dts, new RegExp(`export (declare )?(function|const|class) ${name}\\b`), `${name} has no declaration in herald.d.ts`);
  }
});
