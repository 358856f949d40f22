// The JS Live SDK (@google/genai) on Node, pointed at livegate: one text turn, printing the
// answer and the usage the gateway relayed. Modes (LIVEGATE_GENAI_MODE): `developer` (default:
// the Gemini Developer API client, key as ?key=) and `express` (Vertex express mode,
// `vertexai: true` + apiKey, key as x-goog-api-key). For a self-signed gateway certificate
// set NODE_EXTRA_CA_CERTS.
//
//   LIVEGATE_API_KEY=lg-... node genai.mjs https://127.0.0.1:4000

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { require } from "./modules.mjs";

const { GoogleGenAI, Modality } = require("@google/genai");
// dist/node/index.cjs → the package's package.json (which its exports do not expose).
const { version } = JSON.parse(
  readFileSync(join(dirname(require.resolve("@google/genai")), "..", "..", "package.json"), "utf8"),
);

const baseUrl = process.argv[2];
const apiKey = process.env.LIVEGATE_API_KEY;
const mode = process.env.LIVEGATE_GENAI_MODE ?? "developer";
const model = process.env.LIVEGATE_MODEL ?? "gemini-live-2.5-flash";
console.log(`SDK: @google/genai ${version}, mode ${mode}`);

const ai = new GoogleGenAI({ apiKey, vertexai: mode === "express", httpOptions: { baseUrl } });
let answer = "";
let done;
const turnDone = new Promise((resolve, reject) => (done = { resolve, reject }));
const session = await ai.live.connect({
  model,
  config: { responseModalities: [Modality.TEXT] },
  callbacks: {
    onmessage: (m) => {
      for (const part of m.serverContent?.modelTurn?.parts ?? []) answer += part.text ?? "";
      if (m.usageMetadata) console.log(`USAGE: ${m.usageMetadata.totalTokenCount}`);
      if (m.serverContent?.turnComplete) done.resolve();
    },
    onerror: (e) => done.reject(new Error(`error: ${e.message}`)),
    onclose: (e) => done.reject(new Error(`closed ${e.code} ${e.reason}`)),
  },
});
session.sendClientContent({
  turns: [{ role: "user", parts: [{ text: "Hello from @google/genai" }] }],
  turnComplete: true,
});
await turnDone;
console.log(`ANSWER: ${answer}`);
session.close();
process.exit(0);
