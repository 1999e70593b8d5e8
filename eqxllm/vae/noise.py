"""Training-time corruption of a T5-VAE's two inputs: the decoder's (word dropout) and the encoder's
(word deletion). Both leave the target, the whole sentence, untouched.

Rows are ``[a sentence's tokens, its end token, padding]`` with ``lengths`` counting the tokens and
the end token, as :func:`eqxllm.vae.vae_loss` receives them.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, PRNGKeyArray


def drop_words(
    key: PRNGKeyArray, decoder_ids: Int[Array, "batch seq"], rate: float, pad_id: int
) -> Int[Array, "batch seq"]:
    """Word dropout (Bowman et al., 2016): each decoder input but the start token (column 0) becomes
    ``pad_id`` with probability ``rate``, so that the decoder must read the code, not only its prefix."""
    drop = jax.random.bernoulli(key, rate, decoder_ids.shape).at[:, 0].set(False)
    return jnp.where(drop, pad_id, decoder_ids)


def delete_words(key: PRNGKeyArray, lengths: Int[Array, " batch"], seq: int, rate: float) -> Bool[Array, "batch seq"]:
    """Word deletion (Shen et al., 2020, the denoising autoencoder): the encoder's mask with each
    sentence token deleted with probability ``rate``; the end token always stays, so that no row is
    empty. The encoder skips the deleted positions (the T5-VAE left-aligns what is left)."""
    positions = jnp.arange(seq)[None, :]
    words = positions < lengths[:, None] - 1
    delete = jax.random.bernoulli(key, rate, (lengths.shape[0], seq)) & words
    return (positions < lengths[:, None]) & ~delete
