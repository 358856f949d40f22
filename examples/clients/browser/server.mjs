// The browser page's own backend: serves index.html and mints short-lived browser tokens with
// the API key, which stays here and never reaches the browser. Node 18+ (global fetch), no
// packages.
//
//   LIVEGATE_API_KEY=lg-... node server.mjs http://127.0.0.1:4000 [port]
//
// then open http://127.0.0.1:8080/?gateway=ws://127.0.0.1:4000 (add &auto=1 for a scripted
// text turn and audio turn). A real backend would first check that its own user is signed in.

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const page = new URL("./index.html", import.meta.url);

/**
 * Starts the backend on 127.0.0.1:`port` (0: any free port) and resolves to the listening
 * server. `gateway` is livegate's http(s):// base URL, `key` the API key tokens are minted with.
 */
export async function start({ gateway, key, port = 0, ttlSeconds = 300 }) {
  const server = createServer(async (req, res) => {
    try {
      const path = new URL(req.url, "http://localhost").pathname;
      if (req.method === "GET" && (path === "/" || path === "/index.html")) {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
        res.end(await readFile(page));
      } else if (req.method === "POST" && path === "/token") {
        const r = await fetch(`${gateway}/v1/live/tokens`, {
          method: "POST",
          headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
          body: JSON.stringify({ ttl_seconds: ttlSeconds }),
        });
        res.writeHead(r.status, { "content-type": "application/json" });
        res.end(await r.text());
      } else {
        res.writeHead(404).end();
      }
    } catch (e) {
      res.writeHead(502, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: `token backend: ${e.message}` }));
    }
  });
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return server;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const gateway = process.argv[2] ?? "http://127.0.0.1:4000";
  const key = process.env.LIVEGATE_API_KEY;
  if (!key) {
    console.error("set LIVEGATE_API_KEY");
    process.exit(2);
  }
  const server = await start({ gateway, key, port: Number(process.argv[3] ?? 8080) });
  console.log(`page at http://127.0.0.1:${server.address().port}/`);
}
