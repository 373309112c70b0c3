"""Prompts from a GGUF get exactly llama.cpp's tokens.

The tokenizer files an export writes from a GGUF (transformers' conversion, then the file's
own metadata: `export.gguf_tokenizer`) encode raw prompts and chat prompts as the runtime does
(`Llm.encode`: the post-processor's specials; `Llm.encode_chat`: the rendered template, special
markers parsed); the reference is llama.cpp's tokenizer on the same file (llama-cpp-python in
`.venv-llama`, run in a subprocess: `tokenize(text, add_bos=True, special=True)`, which adds a
bos exactly when the file asks for one). Files: the real SmolLM2-135M-Instruct GGUF (smollm
pre-tokenizer, add_bos_token = false, a ChatML template) and a tiny GGUF written here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.artifacts import ROOT, hf_model, smollm2_gguf
from tests.gguf_files import write_gguf

TEXTS = [
    "Hello world",
    "The year 2024 had 366 days; pi is 3.14159.",
    "  two leading spaces and trailing  ",
    "émigré café — naïve ☕ 日本語のテキスト",
    "def f(x):\n    return x**2\n",
    "<|im_start|>user\nHi there<|im_end|>\n",
]
MESSAGES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Colour of the sky at noon, 12:00?"},
    ],
]

_LLAMA = r"""
import json, sys
from llama_cpp import Llama
req = json.load(sys.stdin)
llm = Llama(req["model"], vocab_only=True, verbose=False)
print(json.dumps([llm.tokenize(t.encode(), add_bos=True, special=True) for t in req["texts"]]))
"""


def llama_tokens(model: Path, texts: list[str]) -> list[list[int]]:
    python = ROOT / ".venv-llama" / "bin" / "python"
    if not python.is_file():
        python = Path("/work/main/.venv-llama/bin/python")
    ok = (
        python.is_file()
        and subprocess.run(
            [str(python), "-c", "import llama_cpp"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not ok:
        pytest.fail("llama.cpp (llama-cpp-python) is not installed: run make llama-venv")
    r = subprocess.run(
        [str(python), "-c", _LLAMA],
        input=json.dumps({"model": str(model), "texts": texts}),
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out: list[list[int]] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def _ours(folder: Path, texts: list[str], chats: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    raw = [tok.encode(t).ids for t in texts]  # Llm.encode
    return raw + [tok.encode(c, add_special_tokens=False).ids for c in chats]  # Llm.encode_chat


def _chats(folder: Path) -> list[str]:
    from runtime.engine.llm.text import ChatTemplate

    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    template = cfg.get("chat_template")
    if template is None and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    t = ChatTemplate.parse(template, str(folder))
    return [t.render(m, True) for m in MESSAGES]


@pytest.mark.parametrize("which", ["smollm2", "tiny-qwen2"])
def test_prompt_tokens_match_llama_cpp(tmp_path: Path, which: str) -> None:
    from export.source import gguf_tokenizer_files

    if which == "smollm2":
        gguf = smollm2_gguf()
    else:
        gguf = write_gguf(hf_model(which), tmp_path / "tiny.gguf", "Q8_0")
    folder = tmp_path / "tok"
    gguf_tokenizer_files(gguf, folder)
    chats = _chats(folder)
    ours = _ours(folder, TEXTS, chats)
    theirs = llama_tokens(gguf, TEXTS + chats)
    for text, a, b in zip(TEXTS + chats, ours, theirs, strict=True):
        assert a == b, f"{text!r}: ours {a} llama.cpp {b}"
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is False
