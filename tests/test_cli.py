import subprocess
import sys

from click.testing import CliRunner

from privinf.cli import main


def test_help_is_fast_and_light():
    code = "import sys, privinf.cli; bad = [m for m in ('torch', 'transformers', 'crypten', 'tenseal') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cards_lists_protocols_and_models():
    res = CliRunner().invoke(main, ["cards"])
    assert res.exit_code == 0, res.output
    assert "bolt" in res.output and "24.6x" in res.output and "N(0,0.042^2)" in res.output
    assert "llama-3.1-8b-instruct" in res.output and "0.075" in res.output


def test_demo_on_a_tiny_local_model(tmp_path):
    from privinf.models import tiny_model
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    model = tiny_model("llama")
    model.save_pretrained(tmp_path)
    vocab = {f"w{i}": i for i in range(99)} | {"[UNK]": 98}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]").save_pretrained(tmp_path)
    res = CliRunner().invoke(main, ["demo", "--model", str(tmp_path), "--card", "bolt", "--card", "exact",
                                    "--prompt", "w1 w2 w3 w4 w5"])
    assert res.exit_code == 0, res.output
    assert "bolt" in res.output and "5 tokens" in res.output
    assert "offline MB" in res.output and "online rounds" in res.output
