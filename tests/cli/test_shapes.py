from datasets import load_from_disk

from corl.cli import main


def test_build_and_show(tmp_path, capsys):
    data = tmp_path / "shapes"
    assert main(["shapes", "build", "--out", str(data), "--n-train", "12", "--n-test", "6", "--seed", "2",
                 "--image-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "train: 12 rows" in out and "test: 6 rows" in out and "counting 2" in out and "mc 6" in out
    assert "test rows showing a train scene:" in out and "asking a train row's question about it:" in out
    ds = load_from_disk(str(data))
    assert len(ds["train"]) == 12 and ds["train"][0]["image"].size == (40, 40)

    sheet = tmp_path / "sheet.png"
    assert main(["shapes", "show", "--data", str(data), "--out", str(sheet), "--max-rows", "4", "--split", "test"]) == 0
    assert sheet.stat().st_size > 1000


def test_errors_and_help(tmp_path, capsys):
    assert main(["shapes"]) == 2
    assert "build" in capsys.readouterr().out
    assert main(["shapes", "show", "--data", str(tmp_path / "missing")]) == 2
    assert "no dataset" in capsys.readouterr().err
    data = tmp_path / "d"
    assert main(["shapes", "build", "--out", str(data), "--n-train", "6", "--n-test", "0"]) == 2
    assert ">= 1" in capsys.readouterr().err
    assert main(["shapes", "build", "--out", str(data), "--n-train", "6", "--n-test", "1"]) == 0
    assert main(["shapes", "show", "--data", str(data), "--split", "validation", "--out",
                 str(tmp_path / "s.png")]) == 2
    assert "validation" in capsys.readouterr().err
    assert main(["shapes", "build", "--out", str(data)]) == 2  # refuses to overwrite
