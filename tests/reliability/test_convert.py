"""`eqxllm convert` carries what a model generates with: the source's tokenizer files and its
``generation_config.json`` (stop ids, sampling defaults), byte for byte."""

import json

from eqxllm.checkpoints.side_files import TOKENIZER_FILES
from eqxllm.cli import main

from ._helpers import make_model_dir


def test_convert_keeps_the_generation_config_and_tokenizer_files(tmp_path, capsys):
    src = make_model_dir(tmp_path / "src")
    generation = {"eos_token_id": [1, 13], "do_sample": False}
    (src / "generation_config.json").write_text(json.dumps(generation))
    (src / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    (src / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    (src / "chat_templates").mkdir()
    (src / "chat_templates" / "tool_use.jinja").write_text("{{ tools | tojson }}")
    assert main(["convert", str(src), str(tmp_path / "dst"), "--dtype", "bfloat16"]) == 0
    for name in ("generation_config.json", "special_tokens_map.json", *TOKENIZER_FILES):
        if (src / name).is_file():
            assert (tmp_path / "dst" / name).read_bytes() == (src / name).read_bytes(), name
    assert (tmp_path / "dst" / "chat_template.jinja").is_file()
    assert (tmp_path / "dst" / "chat_templates" / "tool_use.jinja").read_text() == "{{ tools | tojson }}"
    # converting a source without one over that folder drops the earlier model's generation config
    (src / "generation_config.json").unlink()
    assert main(["convert", str(src), str(tmp_path / "dst")]) == 0
    assert not (tmp_path / "dst" / "generation_config.json").exists()
    capsys.readouterr()
