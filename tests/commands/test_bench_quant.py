"""``slidesparse bench quant`` / ``tune kernels`` through the real CLI entry point."""

import pytest
import torch

from slidesparse.cli import main


def test_groups_list_the_quant_commands(capsys):
    assert main(["bench", "--help"]) == 0
    assert "quant" in capsys.readouterr().out
    assert main(["tune", "--help"]) == 0
    assert "kernels" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
@pytest.mark.parametrize("argv", [["bench", "quant"], ["tune", "kernels", "--K", "64"]])
def test_without_a_gpu_the_commands_fail_in_one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "GPU" in err and "\n" not in err


def test_bad_lists_are_user_errors(capsys):
    assert main(["tune", "kernels", "--M", "16,x"]) == 2
    assert "--M" in capsys.readouterr().err
