"""A tokenizer stand-in for tests: token id ``i`` is the letter ``chr(97 + i)``."""


class _Encoding:
    def __init__(self, ids):
        self.ids = ids


class VAELetters:
    """Id ``i`` is the letter ``chr(97 + i)``, one letter a token, both ways."""

    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)

    def encode(self, text, add_special_tokens=True):
        del add_special_tokens
        return _Encoding([ord(c) - ord("a") for c in text])

    def encode_batch(self, texts, add_special_tokens=True):
        return [self.encode(t, add_special_tokens) for t in texts]
