"""Chat templates: an instruct checkpoint's Jinja template, rendered and tokenized as ``transformers`` does.

An instruct model (Qwen2.5-Instruct, Gemma-it, Llama-3-Instruct, Mistral-Instruct) was trained on
conversations laid out by its chat template, a Jinja2 program kept beside the tokenizer. Where it lives,
first match wins (as ``transformers``' ``PreTrainedTokenizerBase.from_pretrained`` reads it):

1. ``chat_template.jinja`` (the default template) and ``chat_templates/NAME.jinja`` (named ones), the
   layout ``transformers`` >= 4.43 saves; when any of these exist, ``tokenizer_config.json``'s entry is
   ignored;
2. ``tokenizer_config.json``'s ``chat_template``: a string, or a list of ``{"name", "template"}``.

Among named templates ``"default"`` is used (``"tool_use"`` when tools are given and it exists).
The template is rendered in a sandbox (``ImmutableSandboxedEnvironment`` with ``trim_blocks`` and
``lstrip_blocks``) with the globals ``transformers`` gives templates (``raise_exception``,
``strftime_now``, a ``tojson`` filter that does not escape HTML, ``namespace``, ``dict``, the
``{% generation %}`` tag) and the variables ``messages``, ``add_generation_prompt``, ``tools``,
``documents`` and the tokenizer's special tokens (``bos_token``, ``eos_token``, ...). The text is then
encoded without the tokenizer's own special tokens (``add_special_tokens=False``): a template that wants
a BOS writes ``{{ bos_token }}`` itself, so the ids match ``apply_chat_template(..., tokenize=True)``.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from eqxllm.data.tokenizer import TOKENIZER_CONFIG_FILE
from eqxllm.errors import ConfigError, InputError

CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "chat_templates"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# the named special tokens transformers passes to every template (its SPECIAL_TOKENS_ATTRIBUTES)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass(frozen=True)
class ChatTemplates:
    """A tokenizer's chat templates by name (``"default"`` for a single one), its special tokens'
    texts by name (``{"bos_token": "<s>", ...}``) and where they were read (for messages)."""

    templates: dict[str, str]
    special_tokens: dict[str, str] = field(default_factory=dict)
    source: str = "<memory>"

    def select(self, name: str | None = None, *, tools: object = None) -> str:
        """The template called ``name``; by default ``"default"``, or ``"tool_use"`` when ``tools`` are
        given and the tokenizer has one (``transformers``' ``get_chat_template``)."""
        if name is None:
            name = "tool_use" if tools is not None and "tool_use" in self.templates else "default"
        if name not in self.templates:
            raise ConfigError(
                f"{self.source} has no chat template named {name!r} (it has: {', '.join(sorted(self.templates))}); "
                "pass one of those names"
            )
        return self.templates[name]


def load_chat_templates(src: str | Path) -> ChatTemplates:
    """The chat templates and special tokens of the tokenizer in folder ``src`` (or Hub repository id).

    From a Hub repository, ``tokenizer_config.json``, ``special_tokens_map.json`` and
    ``chat_template.jinja`` are fetched (the folder ``chat_templates/`` only comes with a downloaded
    checkpoint directory, which ``resolve_pretrained`` fetches with it).
    Raises :class:`ConfigError` when there is no template (a base model's tokenizer, usually) or a
    file that holds one is malformed.
    """
    read = _reader(src)
    config = _json(read, TOKENIZER_CONFIG_FILE)
    templates: dict[str, str] = {}
    default = read(CHAT_TEMPLATE_FILE)
    if default is not None:
        templates["default"] = default
    path = Path(src).expanduser()
    if path.is_dir() and (path / CHAT_TEMPLATE_DIR).is_dir():
        for file in sorted((path / CHAT_TEMPLATE_DIR).glob("*.jinja")):
            templates[file.name.removesuffix(".jinja")] = file.read_text(encoding="utf-8")
    if not templates:  # files win over the config's entry, as in transformers
        templates = _config_templates(config.get("chat_template"), src)
    if not templates:
        raise ConfigError(
            f'the tokenizer in {src} has no chat template: neither {CHAT_TEMPLATE_FILE} nor a "chat_template" '
            f"entry in {TOKENIZER_CONFIG_FILE}; a base (not instruct) model usually has none: generate from "
            "plain text instead (without --chat)"
        )
    return ChatTemplates(templates, _declared(read, config), str(src))


def declared_special_tokens(src: str | Path) -> dict[str, str]:
    """The named special tokens (``bos_token``, ``eos_token``, ...) that the tokenizer in folder ``src``
    (or Hub repository id) declares, as :func:`load_chat_templates` reads them; ``{}`` for none."""
    read = _reader(src)
    return _declared(read, _json(read, TOKENIZER_CONFIG_FILE))


def _declared(read, config: dict) -> dict[str, str]:
    special = _special_tokens(config)
    if "added_tokens_decoder" not in config:  # transformers' legacy path: special_tokens_map.json overrides
        special.update(_special_tokens(_json(read, SPECIAL_TOKENS_MAP_FILE)))
    return special


def render_chat(
    templates: ChatTemplates,
    messages: Sequence,
    *,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping] | None = None,
    name: str | None = None,
    **variables,
) -> str:
    """The text of ``messages`` laid out by the chat template, as
    ``tokenizer.apply_chat_template(messages, add_generation_prompt=..., tokenize=False)``.

    ``messages`` is a list of ``{"role": ..., "content": ...}``; keys whose value is ``None`` are dropped.
    ``add_generation_prompt`` appends the header of the assistant's turn, so the model writes the reply.
    ``tools`` (JSON schemas) and other ``variables`` (e.g. ``enable_thinking=False``) reach the template
    as they are; they override the special tokens of the same name. A template that raises (e.g. a
    Gemma template given a system message) raises :class:`InputError` with its message; one that does
    not compile raises :class:`ConfigError`.
    """
    chat = _checked_messages(messages)
    template = templates.select(name, tools=tools)
    try:
        compiled = _compile(template)
    except jinja2.TemplateError as e:
        raise ConfigError(f"the chat template of {templates.source} is not valid Jinja: {e}") from e
    context = {**templates.special_tokens, **{k: _plain(v, f"template variable {k!r}") for k, v in variables.items()}}
    try:
        return compiled.render(
            messages=chat,
            tools=None if tools is None else _plain(list(tools), "tools"),
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **context,
        )
    except jinja2.TemplateError as e:
        raise InputError(f"the chat template of {templates.source} refuses these messages: {e}") from e
    except Exception as e:  # a template is a program: whatever it raises is about the template or the messages
        raise InputError(
            f"the chat template of {templates.source} failed on these messages ({type(e).__name__}: {e})"
        ) from e


def chat_prompt(
    src: str | Path,
    messages: Sequence,
    *,
    add_generation_prompt: bool = True,
    tokenizer: Tokenizer | None = None,
    **variables,
) -> list[int]:
    """The token ids that prompt an instruct model with ``messages``, laid out by its chat template.

    ``src`` is the tokenizer's folder (a checkpoint directory) or Hub repository id. The ids equal
    ``AutoTokenizer.from_pretrained(src).apply_chat_template(messages, add_generation_prompt=...,
    tokenize=True)``: the rendered text (:func:`render_chat`, which takes ``tools`` and other template
    ``variables``) is encoded with no special tokens added, since the template writes its own BOS.
    ``tokenizer`` skips loading the tokenizer again when the caller has it.

    ```python
    ids = chat_prompt("Qwen/Qwen2.5-0.5B-Instruct", [{"role": "user", "content": "Hi!"}])
    tokens = eqxllm.generate(model, jnp.asarray(ids), max_new_tokens=64, eos_token_id=[151645])
    ```
    """
    from eqxllm.data.tokenizer import load_tokenizer

    text = render_chat(load_chat_templates(src), messages, add_generation_prompt=add_generation_prompt, **variables)
    tok = load_tokenizer(src) if tokenizer is None else tokenizer
    return tok.encode(text, add_special_tokens=False).ids


def special_token_id(templates: ChatTemplates, tokenizer: Tokenizer, name: str) -> int | None:
    """The id of the special token called ``name`` (e.g. ``"eos_token"``), or None when there is none."""
    text = templates.special_tokens.get(name)
    return None if text is None else tokenizer.token_to_id(text)


# reading ---------------------------------------------------------------------------------------------
def _reader(src: str | Path):
    """``read(name) -> text | None`` for the files of a local folder or a Hub repository."""
    from eqxllm.checkpoints.hub import HubFileMissing, download, looks_like_repo_id

    path = Path(src).expanduser()
    if path.is_dir():
        return lambda name: (path / name).read_text(encoding="utf-8") if (path / name).is_file() else None
    if isinstance(src, str) and looks_like_repo_id(src):

        def read(name: str) -> str | None:
            try:
                return download(src, name).read_text(encoding="utf-8")
            except HubFileMissing:
                return None

        return read
    raise ConfigError(f"chat template source {str(src)!r} is neither a tokenizer folder nor a Hub model id")


def _json(read, name: str) -> dict:
    text = read(name)
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must hold a JSON object, found {type(data).__name__}")
    return data


def _config_templates(entry: object, src: str | Path) -> dict[str, str]:
    """``tokenizer_config.json``'s ``chat_template``: a string, or a list of ``{"name", "template"}``."""
    if entry is None:
        return {}
    if isinstance(entry, str):
        return {"default": entry}
    named = isinstance(entry, list) and all(
        isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str) for t in entry
    )
    if not named:
        raise ConfigError(
            f'{TOKENIZER_CONFIG_FILE} in {src}: "chat_template" must be a string or a list of '
            f'{{"name": ..., "template": ...}} objects, found {json.dumps(entry)[:120]}'
        )
    return {t["name"]: t["template"] for t in entry}  # type: ignore[index]


def _special_tokens(config: dict) -> dict[str, str]:
    """The named special tokens' texts; a token may be saved as a string or as an AddedToken object."""
    found = {}
    for name in SPECIAL_TOKEN_NAMES:
        value = config.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            found[name] = value
    return found


# checking --------------------------------------------------------------------------------------------
def _checked_messages(messages: object) -> list[dict]:
    """A plain copy of ``messages``: a non-empty list of ``{"role": str, "content": ...}``, ``None``s dropped."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise InputError(
            f'messages must be a non-empty list of {{"role": ..., "content": ...}} dicts, found {messages!r:.120}'
        )
    chat = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InputError(f'message {i} must be a {{"role": ..., "content": ...}} dict, found {message!r:.120}')
        message = {k: v for k, v in message.items() if v is not None}
        if not isinstance(message.get("role"), str):
            raise InputError(
                f'message {i} needs a "role" string ("system", "user", "assistant"), found {message!r:.120}'
            )
        if "content" not in message and "tool_calls" not in message:
            raise InputError(f'message {i} ({message["role"]}) has no "content"')
        chat.append(_plain(message, f"message {i}"))
    return chat


def _plain(value, what: str):
    """A copy of ``value`` made of JSON types only, so a template reaches no Python object's methods."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Mapping):
        return {_plain(k, what): _plain(v, what) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    raise InputError(f"{what} holds a {type(value).__name__}; a chat template takes only JSON values")


# the sandbox -----------------------------------------------------------------------------------------
@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    """The template compiled in transformers' sandbox, with its globals and filters."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = _Dict()
    env.globals["namespace"] = _Namespace
    return env.from_string(template)


def _raise_exception(message: str):
    raise jinja2.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; templates expect plain JSON, unicode kept
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _Dict:
    """``dict(...)`` and ``dict.fromkeys(...)`` for templates, without the type itself."""

    def __call__(self, *args, **kwargs) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _check_name(name: object) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise SecurityError(f"a chat template cannot set {name!r} on a namespace (names starting with _)")


class _Namespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` refusing ``_``-prefixed names, which could reach Python internals."""

    def __init__(*args, **kwargs):  # Jinja's own signature, so that namespace(self=...) works
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (which marks the assistant's text for training masks
    in transformers) renders its body unchanged."""

    tags = {"generation"}  # noqa: RUF012 (Jinja's own class attribute)

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body).set_lineno(lineno)
