"""Video LLMs behind one adapter: specs, offline tiny models, full-size configs, layout, decoder loop, conversion."""
