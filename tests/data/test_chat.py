"""Chat templates: text and token ids equal transformers' ``apply_chat_template`` for templates in the
styles of the real families (ChatML, Gemma, Llama 3), where templates are found, and each error."""

import json
from pathlib import Path

import pytest
from tokenizers import AddedToken, processors

from eqxllm.data import chat_prompt, load_chat_templates, render_chat
from eqxllm.data.tokenizer import gpt2_tokenizer, save_tokenizer
from eqxllm.errors import ConfigError, InputError
from tests.checkpoints import test_hub

# Qwen2.5's layout: ChatML with a default system message when the chat has none, and namespace()
CHATML = (
    "{%- set ns = namespace(system=false) %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set ns.system = true %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}\n"
    "{%- for message in messages %}{%- if not (loop.first and ns.system) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n"
)
# Gemma's: BOS written by the template, no system role, strict alternation, 'model' for the assistant
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
# Llama 3's: BOS glued to the first turn, header tokens; block tags on their own lines (trim/lstrip)
LLAMA3 = """{% for message in messages %}
    {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}
    {% if loop.index0 == 0 %}
        {% set content = bos_token + content %}
    {% endif %}
    {{- content -}}
{% endfor %}
{% if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
{% endif %}
"""
# tools as JSON (transformers' tojson: no HTML escaping, unicode kept) and the {% generation %} tag
TOOLS = (
    "{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}{% for m in messages %}{{ m.role }}: "
    "{% generation %}{{ m.content }}{% endgeneration %}\n{% endfor %}{% if add_generation_prompt %}assistant:"
    "{% endif %}"
)
SPECIALS = ["<|im_start|>", "<|im_end|>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
            "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]  # fmt: skip
TOKENS = {
    "chatml": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "gemma": {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<|endoftext|>"},
    "llama3": {
        "bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>", "lstrip": False},
        "eos_token": "<|eot_id|>",
    },
    "tools": {"eos_token": "<|endoftext|>"},
}
CHATS = {
    "user": [{"role": "user", "content": "Hello, who are you?"}],
    "system": [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Hi there!"}],
    "turns": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": " It is 4. "},
        {"role": "user", "content": "And 3+3?"},
    ],
}


def _tokenizer_dir(gpt2_dir: Path, directory: Path, config: dict, *, bos_processor: str | None = None) -> Path:
    """GPT-2's tokenizer with the chat special tokens, saved with ``config`` merged into its
    ``tokenizer_config.json``; ``bos_processor`` makes encoding (with special tokens) prepend that token."""
    tok = gpt2_tokenizer(gpt2_dir / "vocab.json", gpt2_dir / "merges.txt")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    if bos_processor is not None:
        bos = (bos_processor, tok.token_to_id(bos_processor))
        tok.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
    save_tokenizer(tok, directory)
    path = directory / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    return directory


def _ids(ref, messages, add_generation_prompt=True) -> list[int]:
    """transformers' ``apply_chat_template(..., tokenize=True)`` ids (v5 returns a dict by default)."""
    out = ref.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


@pytest.fixture
def reference():
    return pytest.importorskip("transformers").AutoTokenizer


FAMILIES = {"chatml": CHATML, "gemma": GEMMA, "llama3": LLAMA3, "tools": TOOLS}


@pytest.mark.parametrize("family", FAMILIES)
def test_text_and_ids_match_transformers(gpt2_dir, tmp_path, reference, family):
    bos = {"gemma": "<bos>", "llama3": "<|begin_of_text|>"}.get(family)
    config = {"chat_template": FAMILIES[family], **TOKENS[family]}
    path = _tokenizer_dir(gpt2_dir, tmp_path, config, bos_processor=bos)
    ref = reference.from_pretrained(str(path))
    templates = load_chat_templates(path)
    for name, messages in CHATS.items():
        if family == "gemma" and name == "system":
            continue
        for add in (True, False):
            text = render_chat(templates, messages, add_generation_prompt=add)
            assert text == ref.apply_chat_template(messages, add_generation_prompt=add, tokenize=False), (name, add)
            ids = chat_prompt(path, messages, add_generation_prompt=add)
            assert ids == _ids(ref, messages, add_generation_prompt=add)
    if bos is not None:  # the template's BOS is not doubled by the tokenizer's own
        ids = chat_prompt(path, CHATS["user"])
        assert ids[0] == ref.convert_tokens_to_ids(bos) and ids[1] != ids[0]


def test_tools_and_variables_reach_the_template_as_in_transformers(gpt2_dir, tmp_path, reference):
    path = _tokenizer_dir(gpt2_dir, tmp_path, {"chat_template": TOOLS + "{{ greeting }}", **TOKENS["tools"]})
    ref = reference.from_pretrained(str(path))
    tools = [{"type": "function", "function": {"name": "größe", "description": "a < b & 'c'"}}]
    ours = render_chat(load_chat_templates(path), CHATS["user"], tools=tools, greeting="¡hola!")
    assert '"größe"' in ours and "a < b & 'c'" in ours and ours.endswith("assistant:¡hola!")
    assert ours == ref.apply_chat_template(
        CHATS["user"], tools=tools, greeting="¡hola!", add_generation_prompt=True, tokenize=False
    )


def test_a_list_of_named_templates_uses_default(gpt2_dir, tmp_path, reference):
    named = [{"name": "tool_use", "template": TOOLS}, {"name": "default", "template": CHATML}]
    path = _tokenizer_dir(gpt2_dir, tmp_path, {"chat_template": named, **TOKENS["chatml"]})
    templates = load_chat_templates(path)
    assert templates.select() == CHATML and templates.select(tools=[{}]) == TOOLS
    ref = reference.from_pretrained(str(path))
    assert chat_prompt(path, CHATS["turns"]) == _ids(ref, CHATS["turns"])
    with pytest.raises(ConfigError, match=r"has no chat template named 'chatml' \(it has: default, tool_use\)"):
        templates.select("chatml")


def test_the_jinja_files_win_over_the_config(gpt2_dir, tmp_path, reference):
    path = _tokenizer_dir(gpt2_dir, tmp_path, {"chat_template": TOOLS, **TOKENS["chatml"]})
    (path / "chat_template.jinja").write_text(CHATML)
    assert load_chat_templates(path).templates == {"default": CHATML}
    ref = reference.from_pretrained(str(path))
    assert chat_prompt(path, CHATS["system"]) == _ids(ref, CHATS["system"])
    (path / "chat_templates").mkdir()
    (path / "chat_templates" / "tool_use.jinja").write_text(TOOLS)
    assert load_chat_templates(path).templates == {"default": CHATML, "tool_use": TOOLS}


def test_special_tokens_come_from_either_file_as_transformers_reads_them(gpt2_dir, tmp_path, reference):
    path = _tokenizer_dir(gpt2_dir, tmp_path, {"chat_template": "{{ bos_token }}|{{ eos_token }}|{{ unk_token }}"})
    (path / "special_tokens_map.json").write_text(json.dumps({"bos_token": {"content": "<bos>"}}))
    text = render_chat(load_chat_templates(path), CHATS["user"])
    assert text == "<bos>|<|endoftext|>|<|endoftext|>"
    assert text == reference.from_pretrained(str(path)).apply_chat_template(CHATS["user"], tokenize=False)


def test_no_template_says_where_it_looked(gpt2_dir, tmp_path):
    path = _tokenizer_dir(gpt2_dir, tmp_path, {})
    with pytest.raises(ConfigError, match=r"has no chat template: neither chat_template.jinja nor .*tokenizer_config"):
        load_chat_templates(path)


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "System role not supported"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "Conversation roles must alternate"),
        ([], "messages must be a non-empty list of"),
        ("Hello", "messages must be a non-empty list of"),
        (["Hello"], 'message 0 must be a {"role": ..., "content": ...} dict, found \'Hello\''),
        ([{"content": "Hi"}], 'message 0 needs a "role" string'),
        ([{"role": "user"}], 'message 0 (user) has no "content"'),
        ([{"role": "user", "content": object()}], "message 0 holds a object; a chat template takes only JSON values"),
    ],
)
def test_bad_messages_raise_input_error(messages, message):
    templates = load_chat_templates_from(GEMMA, bos_token="<bos>")
    with pytest.raises(InputError) as info:
        render_chat(templates, messages)
    assert message in str(info.value)


def test_a_template_that_does_not_compile_raises_config_error():
    with pytest.raises(ConfigError, match="is not valid Jinja: .*"):
        render_chat(load_chat_templates_from("{% for m in messages %}{{ m.content }}"), CHATS["user"])


def test_a_malformed_config_entry_raises_config_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [{"name": "default"}]}))
    with pytest.raises(ConfigError, match='"chat_template" must be a string or a list of'):
        load_chat_templates(tmp_path)


def test_the_sandbox_refuses_python_internals():
    templates = load_chat_templates_from("{{ messages.__class__.__mro__ }}{% set ns = namespace(_x=1) %}")
    with pytest.raises(InputError, match="refuses these messages"):
        render_chat(templates, CHATS["user"])


def test_a_template_that_fails_while_rendering_is_an_input_error():
    for template in ("{{ 1 / 0 }}", "{{ messages[0]['content'] | int / (messages | length - 1) }}"):
        with pytest.raises(InputError, match=r"failed on these messages \(ZeroDivisionError"):
            render_chat(load_chat_templates_from(template), CHATS["user"])


def load_chat_templates_from(template: str, **special) -> "object":
    from eqxllm.data.chat import ChatTemplates

    return ChatTemplates({"default": template}, special, "test")


offline_cache = test_hub.offline_cache  # an empty Hub cache, offline (a fixture)


def test_a_hub_repository_reads_as_its_folder(gpt2_dir, tmp_path, offline_cache):
    path = _tokenizer_dir(gpt2_dir, tmp_path / "local", {"chat_template": TOOLS, **TOKENS["chatml"]})
    (path / "chat_template.jinja").write_text(CHATML)
    test_hub.fake_hub_repo(offline_cache, "org/tiny-chat", {p.name: p.read_bytes() for p in path.iterdir()})
    assert load_chat_templates("org/tiny-chat").templates == {"default": CHATML}
    assert chat_prompt("org/tiny-chat", CHATS["turns"]) == chat_prompt(path, CHATS["turns"])
