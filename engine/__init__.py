"""The model: config, FSQ, encoder, decoder, router, rate control, stream state, checkpoint,
training and evaluation metrics. No asyncio, no sockets."""
