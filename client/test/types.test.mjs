// herald.d.ts type-checks an app's use of the SDK under `tsc --strict`
// (including two misuses that must be errors).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const tsc = `${root}node_modules/typescript/bin/tsc`;

test("the declarations compile against an app under --strict", () => {
  assert.ok(existsSync(tsc), "typescript is a devDependency; run scripts/setup");
  const args = [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext", "--moduleResolution", "nodenext", "--lib", "es2022,dom", fileURLToPath(new URL("types/usage.ts", import.meta.url))];
  try {
    execFileSync(process.execPath, args, { cwd: root, encoding: "utf8" });
  } catch (e) {
    assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
  }
});
