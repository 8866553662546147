"""diffusers' ``ModelMixin.to`` warns "There are modules in X that should be kept in float32: []" at every dtype
cast, also when there are none: it tests ``(self._keep_in_fp32_modules or []) is not None``, always true, so no
class attribute can silence it (diffusers 0.42). This drops exactly that empty-list message, for the package and
for the code a saved folder carries (plain diffusers users cast too)."""

import logging


def _not_the_empty_fp32_warning(record: logging.LogRecord) -> bool:
    return "that should be kept in float32: []." not in record.getMessage()


# registered by the logger's name: diffusers' logging keeps it, and nothing is imported for it
logging.getLogger("diffusers.models.modeling_utils").addFilter(_not_the_empty_fp32_warning)
