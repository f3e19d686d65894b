"""The built-in presets (`*.yaml` beside this file) and the loading of configurations."""

from audiocpc.presets.load import (apply_overrides, available_presets, config_from_dict,
                                   config_from_yaml_file, load_config, parse_override,
                                   preset_dict, validate_config)

__all__ = ["apply_overrides", "available_presets", "config_from_dict", "config_from_yaml_file",
           "load_config", "parse_override", "preset_dict", "validate_config"]
