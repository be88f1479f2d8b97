"""Drop-in compatibility APIs: the OpenAI Images API (openai.py) and the AUTOMATIC1111 web UI
API (a1111.py, a1111_info.py). Each request becomes ordinary fleet jobs (queue, scheduling,
retries, cost) that the endpoint waits for, up to `IMAGEFLEET_COMPAT_WAIT_SECONDS`
(docs/compat.md)."""
