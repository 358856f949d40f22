"""The official google-genai SDK, pointed at livegate, in each of its client modes
(LIVEGATE_GENAI_MODE):

- `express` (default): Vertex express mode, `vertexai=True` + `api_key`. The SDK sends the
  livegate API key as `x-goog-api-key` to
  `{base_url}/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent` and the
  model as `publishers/google/models/{id}`; the gateway expands it with its default project.
  A base URL ending in `/` works too (the SDK then sends `//ws/…`).
- `gateway`: `vertexai=True`, no API key and no project, a `wss://…/vertex_ai/live` base URL
  (which the SDK then uses verbatim) and the key in an `Authorization: Bearer` header of
  `http_options.headers`; the model goes as written and the gateway places it.
- `developer`: the Gemini Developer API client (`api_key` only), which connects to
  `/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent`; the
  gateway serves it against Vertex AI.

The SDK only speaks TLS, so the gateway must serve it (GATEWAY_TLS_CERT / GATEWAY_TLS_KEY);
point SSL_CERT_FILE at the certificate if it is self-signed.

    SSL_CERT_FILE=cert.pem python genai_client.py https://127.0.0.1:4000 lg-...
    SSL_CERT_FILE=cert.pem LIVEGATE_GENAI_MODE=gateway python genai_client.py wss://127.0.0.1:4000/vertex_ai/live lg-...
"""

import asyncio
import os
import sys

from google import genai
from google.genai import types


def client_for(mode: str, base_url: str, key: str) -> genai.Client:
    options = types.HttpOptions(base_url=base_url)
    if mode == "express":
        return genai.Client(vertexai=True, api_key=key, http_options=options)
    if mode == "gateway":
        # No api_key and no project: the SDK then connects to base_url verbatim and sends
        # only the headers given here, so the key goes as a header of our own.
        options = types.HttpOptions(base_url=base_url, headers={"Authorization": f"Bearer {key}"})
        return genai.Client(vertexai=True, http_options=options)
    if mode == "developer":
        return genai.Client(api_key=key, http_options=options)
    raise SystemExit(f"unknown LIVEGATE_GENAI_MODE {mode!r}")


async def main(base_url: str, key: str, model: str, mode: str) -> None:
    print(f"SDK: google-genai {genai.__version__}, mode {mode}")
    client = client_for(mode, base_url, key)
    config = types.LiveConnectConfig(response_modalities=["TEXT"])
    answer = ""
    async with client.aio.live.connect(model=model, config=config) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="Hello from google-genai")]),
            turn_complete=True,
        )
        async for message in session.receive():
            if message.text:
                answer += message.text
            if message.usage_metadata:
                print(f"USAGE: {message.usage_metadata.total_token_count}")
            if message.server_content and message.server_content.turn_complete:
                break
    print(f"ANSWER: {answer}")


if __name__ == "__main__":
    base = sys.argv[1] if len(sys.argv) > 1 else os.environ["LIVEGATE_BASE_URL"]
    api_key = sys.argv[2] if len(sys.argv) > 2 else os.environ["LIVEGATE_API_KEY"]
    asyncio.run(
        main(
            base,
            api_key,
            os.environ.get("LIVEGATE_MODEL", "gemini-live-2.5-flash"),
            os.environ.get("LIVEGATE_GENAI_MODE", "express"),
        )
    )
