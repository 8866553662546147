"""What a plain ``pip install iter-diffusers`` gives: the bundled model by name, loaded without warnings."""

import iter_diffusers
from iter_diffusers import ITERPipeline


def test_the_bundled_model_loads_from_its_exported_path_without_an_accelerate_warning(capfd):
    pipe = ITERPipeline.from_pretrained(iter_diffusers.DEMO_MODEL_PATH)
    assert pipe.upscale_factor == 4
    assert "accelerate" not in capfd.readouterr().err  # diffusers warns at every load when accelerate is missing
