// LiteLLM's documented JavaScript client, adapted to livegate (Node 22+ has a global
// WebSocket; on Node 20 run `npm install ws` and it is picked up automatically).
//
//   node client.mjs "ws://127.0.0.1:4000/v1/vertex-ai/live?project_id=p" lg-...
//
// Node's WebSocket cannot set headers, so the key travels as the `livegate-key.<key>`
// subprotocol, exactly as a browser would send it.

const url = process.argv[2] ?? process.env.LIVEGATE_URL;
const key = process.argv[3] ?? process.env.LIVEGATE_API_KEY;
const WS = globalThis.WebSocket ?? (await import("ws")).default;

const ws = new WS(url, [`livegate-key.${key}`]);
let answer = "";

ws.onopen = function () {
  // Send setup
  const setup = {
    setup: {
      model: "gemini-live-2.5-flash",
      generation_config: { response_modalities: ["TEXT"] },
    },
  };
  ws.send(JSON.stringify(setup));
};

ws.onmessage = async function (event) {
  // Google (and so livegate) sends JSON in binary frames.
  const raw = typeof event.data === "string" ? event.data : Buffer.from(await new Response(event.data).arrayBuffer()).toString();
  const data = JSON.parse(raw);
  console.log("Received:", data);

  // Check if setup is complete
  if (data.setupComplete) {
    // Send a message
    const message = {
      client_content: {
        turns: [{ role: "user", parts: [{ text: "Hello!" }] }],
        turn_complete: true,
      },
    };
    ws.send(JSON.stringify(message));
  }
  for (const part of data.serverContent?.modelTurn?.parts ?? []) answer += part.text ?? "";
  if (data.serverContent?.turnComplete) {
    console.log(`ANSWER: ${answer}`);
    ws.close(1000, "done");
  }
};

ws.onclose = (e) => console.log(`closed ${e.code} ${e.reason}`);
