"""torch.hub entry points: every registered OQATNets name, e.g.
``torch.hub.load('<owner>/oqatnets', 'oqat_2bit_m', pretrained=True)``.

Names holding a dot (the authors' ids such as ``oqa_mbv3_..._w1.0_b2``) are not Python
identifiers; use their ``oqat_supernet_mbv3_w{b}a{b}`` names here.
"""
dependencies = ['torch']

import oqatnets as _oqatnets  # noqa: E402


def _entrypoint(name):
    def entrypoint(pretrained=False, **kwargs):
        return _oqatnets.create_model(name, pretrained=pretrained, **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__doc__ = f'OQATNets {name!r}; keyword arguments go to oqatnets.create_model.'
    return entrypoint


for _name in _oqatnets.list_models():
    if _name.isidentifier():
        globals()[_name] = _entrypoint(_name)
del _name
