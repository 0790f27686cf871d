// The package's client IS web/herald-client.js (and its .d.ts), the file
// Herald serves at /herald-client.js: copied here before tests and `npm pack`,
// never committed in sdk/js, so there is one source. `--check` fails when a
// copy is stale (CI runs it after the tests).
import { copyFileSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const web = join(here, "../../web");
const check = process.argv.includes("--check");
for (const name of ["herald-client.js", "herald-client.d.ts"]) {
  const [from, to] = [join(web, name), join(here, name)];
  if (check) {
    if (readFileSync(from, "utf8") !== readFileSync(to, "utf8")) {
      console.error(`${to} differs from ${from}: run npm run sync`);
      process.exit(1);
    }
  } else {
    copyFileSync(from, to);
  }
}
