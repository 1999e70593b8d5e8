"""The T5-VAE's user-facing tools (:class:`eqxllm.models.T5VAE`): text to codes and back (greedy,
sampled, beam search), latent paths (straight, or geodesic through a bank of codes), refined codes,
new codes and evaluation metrics; the training loss is the task's (:mod:`eqxllm.train.tasks`).

>>> z = encode_texts(vae, tok, ["Tom saw a big dog.", "Lily ate a red apple."])   # [2, tokens, latent]
>>> decode_latents(vae, tok, z)                                                 # the sentences back
>>> interpolate_texts(vae, tok, "Tom saw a big dog.", "Lily ate a red apple.", 5, num_beams=4)
>>> interpolate_texts(vae, tok, a, b, 7, method="geodesic", bank=build_bank(vae, tok, sentences), refine_steps=300)
>>> decode_latents(vae, tok, sample_latents(key, fit_latent_gaussian(z_of_many), 5))   # new sentences
"""

from eqxllm.vae.decoding import LatentSource, beam_search_from_latent, generate_from_latent
from eqxllm.vae.evaluate import evaluate_sentences, evaluate_text_file
from eqxllm.vae.geodesic import CodeBank, bank_from_codes, geodesic_nodes, geodesic_path
from eqxllm.vae.interpolate import interpolate, interpolation_path, lerp, slerp
from eqxllm.vae.latent_fit import LatentGaussian, fit_latent_gaussian, sample_latents
from eqxllm.vae.metrics import (
    active_units,
    annealed_weight,
    gaussian_kernel,
    gaussian_kl,
    mmd,
    mmd_to_normal,
    sequence_accuracy,
    token_accuracy,
)
from eqxllm.vae.refine import Refined, code_margins, reconstructs, refine_latents
from eqxllm.vae.text import build_bank, decode_latents, encode_texts, interpolate_texts

__all__ = [
    "CodeBank",
    "LatentGaussian",
    "LatentSource",
    "Refined",
    "active_units",
    "annealed_weight",
    "bank_from_codes",
    "beam_search_from_latent",
    "build_bank",
    "code_margins",
    "decode_latents",
    "encode_texts",
    "fit_latent_gaussian",
    "evaluate_sentences",
    "evaluate_text_file",
    "gaussian_kernel",
    "gaussian_kl",
    "generate_from_latent",
    "geodesic_nodes",
    "geodesic_path",
    "interpolate",
    "interpolate_texts",
    "interpolation_path",
    "lerp",
    "mmd",
    "mmd_to_normal",
    "reconstructs",
    "refine_latents",
    "sample_latents",
    "sequence_accuracy",
    "slerp",
    "token_accuracy",
]
