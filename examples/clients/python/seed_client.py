"""LiteLLM's documented Python client for the Vertex AI Live passthrough, adapted to livegate.

The only changes from LiteLLM's example: the URL and API key come from the command line (or
LIVEGATE_URL / LIVEGATE_API_KEY), and the key is sent as `Authorization: Bearer`, which
LiteLLM's page describes but its example omits.

    python seed_client.py ws://127.0.0.1:4000/v1/vertex-ai/live?project_id=my-project lg-...
"""

import asyncio
import json
import os
import sys

import websockets


async def chat_with_gemini(uri: str, key: str, model: str, text: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(uri, additional_headers=headers) as websocket:
        # Setup
        setup = {
            "setup": {
                "model": model,
                "generation_config": {"response_modalities": ["TEXT"]},
            }
        }
        await websocket.send(json.dumps(setup))

        # Wait for setup response
        response = await websocket.recv()
        print(f"Setup: {response}")

        # Send message
        message = {
            "client_content": {
                "turns": [{"role": "user", "parts": [{"text": text}]}],
                "turn_complete": True,
            }
        }
        await websocket.send(json.dumps(message))

        # Receive response
        answer = ""
        async for response in websocket:
            print(f"Response: {response}")
            # Check if turn is complete
            data = json.loads(response)
            for part in data.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
                answer += part.get("text", "")
            if data.get("serverContent", {}).get("turnComplete"):
                break
        return answer


def main() -> None:
    uri = sys.argv[1] if len(sys.argv) > 1 else os.environ["LIVEGATE_URL"]
    key = sys.argv[2] if len(sys.argv) > 2 else os.environ["LIVEGATE_API_KEY"]
    model = os.environ.get(
        "LIVEGATE_MODEL",
        "projects/your-project-id/locations/us-central1/publishers/google/models/gemini-2.0-flash-live-preview-04-09",
    )
    answer = asyncio.run(chat_with_gemini(uri, key, model, "Hello!"))
    print(f"ANSWER: {answer}")


if __name__ == "__main__":
    main()
