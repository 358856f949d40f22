// Where the tests' Node packages come from: the cache the Rust tests install
// package-lock.json into (LIVEGATE_NODE_MODULES, a node_modules directory), else this
// directory's own node_modules (after `npm ci` here).

import { createRequire } from "node:module";
import { join } from "node:path";

const base = process.env.LIVEGATE_NODE_MODULES
  ? join(process.env.LIVEGATE_NODE_MODULES, "..", "package.json")
  : import.meta.url;

/** `require` resolving from that node_modules. */
export const require = createRequire(base);
