"""The licence of trained weights follows what they were made from: official-derived weights keep CC BY-NC-SA 4.0
(and the S-Lab terms), weights from scratch get --license, and the card says which case applies."""

import pytest
from huggingface_hub import metadata_load

from iter_diffusers.model_card import (LICENCE_NOTE, OFFICIAL_LICENSE, UNCHOSEN_LICENSE_NAME, LicenceConflict,
                                       weights_licence)
from test_training import TINY_CONFIG, common, photos, run_main  # noqa: F401 (photos: the fixture)

INHERIT = "inherit these terms"


def _card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    return metadata_load(folder / "README.md"), text.split("## Licence", 1)[1].split("## Citation")[0]


def test_from_scratch_gets_the_chosen_licence_and_a_run_from_it_keeps_it(photos, tmp_path):
    """A VQGAN from scratch with --license cc0-1.0: that licence, no inherit paragraph; an lq run from it keeps it."""
    scratch, lq = tmp_path / "vqgan", tmp_path / "lq"
    args = common(TINY_CONFIG, photos, scratch, 1)
    args[0] = "--model_config"
    run_main("--stage", "vqgan", *args, "--license", "cc0-1.0", "--gan_weight", 0)
    metadata, licence = _card(scratch)
    assert metadata["license"] == "cc0-1.0" and metadata["weights_origin"] == "from-scratch"
    assert "trained from scratch" in licence and "chose this licence" in licence and INHERIT not in licence
    run_main("--stage", "lq", *common(scratch, photos, lq, 1), "--train_components", "evaluator")
    metadata, licence = _card(lq)
    assert metadata["license"] == "cc0-1.0" and metadata["weights_origin"] == "derived"
    assert str(scratch) in licence and INHERIT not in licence


def test_a_run_from_official_derived_weights_keeps_their_licence(converted_dir, photos, tmp_path):
    out = tmp_path / "lq"
    run_main("--stage", "lq", *common(converted_dir, photos, out, 1), "--train_components", "evaluator")
    metadata, licence = _card(out)
    assert metadata["license"] == OFFICIAL_LICENSE and metadata["weights_origin"] == "official-derived"
    assert LICENCE_NOTE in licence and "official ITER weights" in licence
    with pytest.raises(SystemExit, match=f"--license cc0-1.0: .* keep {OFFICIAL_LICENSE}; drop --license"):
        run_main("--stage", "lq", *common(out, photos, tmp_path / "relicensed", 1), "--license", "cc0-1.0")
    assert not (tmp_path / "relicensed").exists()


@pytest.mark.parametrize("start, card, chosen, expected", [
    (None, None, None, ("other", "from-scratch", UNCHOSEN_LICENSE_NAME)),
    (None, None, "apache-2.0", ("apache-2.0", "from-scratch", None)),
    ("p", None, None, ("other", "derived", UNCHOSEN_LICENSE_NAME)),  # no card: no licence is made up
    ("p", {"license": "apache-2.0"}, None, ("apache-2.0", "derived", None)),
    ("p", {"license": "apache-2.0"}, "mit", ("mit", "derived", None)),
    ("p", {"license": "other", "license_name": UNCHOSEN_LICENSE_NAME}, "cc0-1.0", ("cc0-1.0", "derived", None)),
    ("p", {"license": "other", "license_name": UNCHOSEN_LICENSE_NAME}, None, ("other", "derived",
                                                                                UNCHOSEN_LICENSE_NAME)),
    ("p", {"source_files": [{"name": "a.pth", "sha256": "0"}]}, None, (OFFICIAL_LICENSE, "official-derived", None)),
    ("p", {"license": OFFICIAL_LICENSE}, OFFICIAL_LICENSE, (OFFICIAL_LICENSE, "official-derived", None)),
])
def test_weights_licence_cases(start, card, chosen, expected):
    """(A start with no card refuses a chosen licence: see the next test.)"""
    licence = weights_licence(start, card, chosen)
    assert (licence.license, licence.origin, licence.license_name) == expected
    assert (LICENCE_NOTE in licence.card_fields()["licence_text"]) == (expected[0] == OFFICIAL_LICENSE)


def test_a_start_without_a_card_refuses_a_chosen_licence():
    """save_pretrained writes no card: official weights saved that way must not be relicensed by --license."""
    with pytest.raises(LicenceConflict, match="has no model card saying what its weights were made from"):
        weights_licence("saved-folder", None, "cc0-1.0")
    assert weights_licence("saved-folder", None, OFFICIAL_LICENSE).license == OFFICIAL_LICENSE


def test_official_derived_weights_refuse_another_licence():
    with pytest.raises(LicenceConflict, match="share-alike"):
        weights_licence("p", {"license": OFFICIAL_LICENSE}, "cc0-1.0")


def test_a_card_given_no_licence_states_none(pipe, tmp_path):
    from iter_diffusers.model_card import trained_model_card

    trained_model_card(pipe, title="t", description="d", training={}, metrics=None).save(tmp_path / "README.md")
    metadata, licence = _card(tmp_path)
    assert (metadata["license"], metadata["license_name"]) == ("other", UNCHOSEN_LICENSE_NAME)
    assert "No licence was stated" in licence and INHERIT not in licence
