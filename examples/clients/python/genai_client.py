"""The official google-genai SDK, pointed at livegate.

Vertex express mode: the SDK sends the livegate API key as `x-goog-api-key` to
`{base_url}/ws/google.cloud.aiplatform.v1beta1.LlmBidiService/BidiGenerateContent` and the
model as `publishers/google/models/{id}`; the gateway expands it with its default project.
The SDK only speaks TLS, so the gateway must serve it (GATEWAY_TLS_CERT / GATEWAY_TLS_KEY);
point SSL_CERT_FILE at the certificate if it is self-signed.

    SSL_CERT_FILE=cert.pem python genai_client.py https://127.0.0.1:4000 lg-...
"""

import asyncio
import os
import sys

from google import genai
from google.genai import types


async def main(base_url: str, key: str, model: str) -> None:
    client = genai.Client(
        vertexai=True,
        api_key=key,
        http_options=types.HttpOptions(base_url=base_url),
    )
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
    asyncio.run(main(base, api_key, os.environ.get("LIVEGATE_MODEL", "gemini-live-2.5-flash")))
