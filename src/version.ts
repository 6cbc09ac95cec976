// loco's version, as package.json states it (read at run time, so there is one source).
import * as fs from "node:fs";
import * as path from "node:path";

function readVersion(): string {
  // dist/src/version.js and src/version.ts both sit two levels below the package root.
  for (const root of [path.join(__dirname, "..", ".."), path.join(__dirname, "..")]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "loco" && typeof pkg.version === "string") return pkg.version;
    } catch {
      // not here
    }
  }
  return "unknown";
}

export const VERSION: string = readVersion();
