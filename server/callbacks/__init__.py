"""Deepgram's asynchronous mode (`callback=`): durable jobs, delivered with retries."""
