import re

import numpy as np
import pytest
import yaml

from edgenas.errors import ArchError, ConfigError
from edgenas.space import (
    Arch, SearchSpace, arch_ops, crossover, decode, encode, features, genome_of, largest, load_space, make_arch,
    mutate, preset_names, sample, sample_genomes, smallest, validate,
)

PRESETS = ["mbv3-w1.0", "mbv3-w1.2", "mbv3-tiny"]


def test_presets_are_shipped():
    assert set(PRESETS) <= set(preset_names())


@pytest.mark.parametrize("name", PRESETS)
def test_preset_structure_is_ofa_mobilenetv3(name):
    s = load_space(name)
    assert [u.act for u in s.units] == ["relu", "relu", "hswish", "hswish", "hswish"]
    assert [u.se for u in s.units] == [False, True, False, True, True]
    assert s.kernel_sizes == (3, 5, 7) and s.expand_ratios == (3, 4, 6) and s.depths == (2, 3, 4)


def test_ofa_widths_and_resolutions():
    w10, w12 = load_space("mbv3-w1.0"), load_space("mbv3-w1.2")
    widths = lambda s: [s.stem_channels, s.first_block_channels, *[u.channels for u in s.units],
                        s.final_expand_channels, s.feature_mix_channels]
    assert widths(w10) == [16, 16, 24, 40, 80, 112, 160, 960, 1280]
    assert widths(w12) == [24, 24, 32, 48, 96, 136, 192, 1152, 1536]
    assert [u.stride for u in w10.units] == [2, 2, 2, 1, 2]
    assert w10.resolutions == tuple(range(128, 225, 16))
    assert w12.resolutions == tuple(range(160, 225, 16))


def test_w12_layer_shapes_match_ofa_published_latency_tables(ofa_note10_dir):
    """Every layer of every w1.2 subnet has a key in OFA's Note10 tables: our shapes are OFA's."""
    space = load_space("mbv3-w1.2")
    rng = np.random.default_rng(0)
    for r in space.resolutions:
        keys = set(yaml.safe_load((ofa_note10_dir / f"{r}_lookup_table.yaml").read_text()))
        archs = [largest(space, r), smallest(space, r)] + [a for a in sample(space, rng, 30)]
        for arch in archs:
            arch = Arch(r, arch.units)
            missing = [op.key for op in arch_ops(space, arch) if op.key not in keys]
            assert not missing, missing[:3]


def test_num_subnets_matches_enumeration_on_a_small_space():
    data = load_space("mbv3-tiny").to_dict()
    data.update(units=data["units"][:2], kernel_sizes=[3, 5], expand_ratios=[3], depths=[1, 2], resolutions=[24, 32])
    space = SearchSpace.from_dict(data)
    genomes = set()
    g = genome_of(space)
    for idx in np.ndindex(*g.choices):
        genomes.add(tuple(g.canonical(np.array([idx]))[0]))
    assert space.num_subnets() == len(genomes) == 2 * (2 + 4) ** 2


@pytest.mark.parametrize("name", PRESETS)
def test_arch_string_round_trips(name):
    space = load_space(name)
    rng = np.random.default_rng(1)
    for arch in sample(space, rng, 50) + [largest(space), smallest(space)]:
        text = str(arch)
        assert re.fullmatch(r"r\d+(_k\de\d(,k\de\d)*)+", text)
        assert Arch.parse(text, space) == arch


def test_arch_string_example():
    space = load_space("mbv3-w1.0")
    arch = Arch.parse("r160_k3e4,k5e6_k7e3,k3e3,k5e4_k3e6,k3e6_k5e3,k5e3,k5e3,k5e3_k7e6,k7e6", space)
    assert arch.resolution == 160 and arch.depths == (2, 3, 2, 4, 2)
    assert arch.units[1] == ((7, 3), (3, 3), (5, 4))


@pytest.mark.parametrize("text, fragment", [
    ("r161_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4", "resolution 161"),
    ("r160_k4e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4", "kernel size 4 of unit 1 block 1"),
    ("r160_k3e4,k3e4_k3e4,k3e5_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4", "expand ratio 5 of unit 2 block 2"),
    ("r160_k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4", "depth 1 of unit 1"),
    ("r160_k3e4,k3e4_k3e4,k3e4", "has 2 units"),
    ("160_k3e4", "expected 'r<resolution>"),
    ("r160_k3x4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4", "block 'k3x4'"),
])
def test_invalid_arch_names_field_block_and_allowed_values(text, fragment):
    with pytest.raises(ArchError) as err:
        Arch.parse(text, load_space("mbv3-w1.0"))
    assert fragment in str(err.value)
    if "allowed" in str(err.value):
        assert re.search(r"allowed \[", str(err.value))


def test_make_arch_from_ofa_lists():
    space = load_space("mbv3-w1.0")
    arch = make_arch(space, 176, [3, 5, 7, 3] * 5, [6, 4, 3, 3] * 5, [2, 3, 4, 2, 3])
    assert arch.depths == (2, 3, 4, 2, 3)
    assert arch.units[2] == ((3, 6), (5, 4), (7, 3), (3, 3))
    with pytest.raises(ArchError, match="expected 20 kernel sizes"):
        make_arch(space, 176, [3] * 19, [6] * 20, [2] * 5)


@pytest.mark.parametrize("name", PRESETS)
def test_genome_round_trip_and_canonical(name):
    space = load_space(name)
    rng = np.random.default_rng(2)
    genomes = sample_genomes(space, rng, 200)
    archs = decode(space, genomes)
    assert np.array_equal(encode(space, archs), genomes)
    # Changing a gene of an inactive slot does not change the arch, and canonical() undoes it.
    g = genome_of(space)
    inactive = ~g.active_mask(genomes)
    row, slot = np.argwhere(inactive)[0]
    noisy = genomes.copy()
    noisy[row, g.kernel.start + slot] = len(space.kernel_sizes) - 1
    assert decode(space, noisy[row:row + 1])[0] == archs[row]
    assert np.array_equal(g.canonical(noisy), genomes)


def test_features_are_fixed_length_one_hot():
    space = load_space("mbv3-w1.0")
    rng = np.random.default_rng(3)
    genomes = sample_genomes(space, rng, 64)
    f = features(space, genomes)
    assert f.shape == (64, space.num_slots * 6 + len(space.resolutions))
    active = genome_of(space).active_mask(genomes).sum(1)
    # one kernel one-hot and one expand one-hot per active block, one resolution one-hot
    assert np.array_equal(f.sum(1), 2 * active + 1)


def test_sampling_is_seeded_and_uses_no_global_state():
    space = load_space("mbv3-w1.0")
    a = sample(space, np.random.default_rng(7), 20)
    np.random.seed(0)
    b = sample(space, np.random.default_rng(7), 20)
    assert a == b
    assert a != sample(space, np.random.default_rng(8), 20)
    depths = {d for arch in a for d in arch.depths}
    assert depths == set(space.depths)


def test_mutation_and_crossover_stay_valid_and_seeded():
    space = load_space("mbv3-w1.0")
    rng = np.random.default_rng(4)
    parents = sample(space, rng, 40)
    for a, b in zip(parents[::2], parents[1::2]):
        m = mutate(space, a, np.random.default_rng(5), prob=0.5)
        assert validate(m, space) is m and m != a
        assert mutate(space, a, np.random.default_rng(5), prob=0.5) == m
        c = crossover(space, a, b, np.random.default_rng(6))
        validate(c, space)
        for u in range(len(space.units)):
            assert len(c.units[u]) in (len(a.units[u]), len(b.units[u]))
    assert mutate(space, parents[0], rng, prob=0.0) == parents[0]


def test_deeper_mutation_gets_random_not_canonical_blocks():
    space = load_space("mbv3-w1.0")
    shallow = Arch(224, tuple(((7, 6),) * 2 for _ in space.units))
    rng = np.random.default_rng(9)
    new_blocks = set()
    for _ in range(200):
        m = mutate(space, shallow, rng, prob=0.3)
        for unit in m.units:
            new_blocks.update(unit[2:])
    assert len(new_blocks) > 3  # not all (3, 3), the canonical zero genes


def _write(tmp_path, data):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_user_space_from_yaml(tmp_path):
    data = load_space("mbv3-tiny").to_dict()
    data["name"] = "mine"
    data["resolutions"] = [32, 40]
    space = load_space(_write(tmp_path, data))
    assert space.name == "mine" and space.resolutions == (32, 40)
    assert space.hash != load_space("mbv3-tiny").hash


@pytest.mark.parametrize("change, fragment", [
    ({"colour": 3}, "key 'colour': got an unknown key, expected one of name, units"),
    ({"stem_channels": "16"}, "key 'stem_channels': got '16', expected an integer from 1"),
    ({"kernel_sizes": [3, 4]}, "key 'kernel_sizes': got a list [3, 4], expected odd kernel sizes"),
    ({"units": [{"channels": 8, "stride": 1, "act": "gelu", "se": False}]}, "key 'units.0.act': got 'gelu', expected one of relu, hswish"),
    ({"units": [{"channels": 8, "stride": 1, "act": "relu"}]}, "key 'units.0.se': got nothing (the key is missing)"),
    ({"resolutions": 32}, "key 'resolutions': got 32, expected a non-empty list of integers"),
    ({"expand_ratios": [float("nan")]}, "key 'expand_ratios.0': got NaN, expected a number > 0"),
    ({"depths": [3, 2]}, "key 'depths': got a list [3, 2], expected a non-empty list of integers from 1 to 32, strictly"),
    ({"units": []}, "key 'units': got a list [], expected a non-empty list of mappings"),
    ({"stem_stride": 10**60}, "key 'stem_stride': got an integer of about 60 digits"),
])
def test_bad_space_yaml_names_field_and_file(tmp_path, change, fragment):
    data = load_space("mbv3-tiny").to_dict()
    data.update(change)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_missing_field_and_unknown_preset(tmp_path):
    data = load_space("mbv3-tiny").to_dict()
    del data["depths"]
    with pytest.raises(ConfigError, match=r"key 'depths': got nothing \(the key is missing\)"):
        load_space(_write(tmp_path, data))
    with pytest.raises(ConfigError, match="unknown search space 'mbv9'.*mbv3-tiny"):
        load_space("mbv9")


@pytest.mark.parametrize("text", [
    "r٢٨_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4",  # Arabic-Indic digits
    "r32_k３e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4_k3e4,k3e4",  # a full-width digit
    "r32_k3e4," + "k3e4," * 2000 + "k3e4",
    "r" + "9" * 5000 + "_k3e4",
])
def test_arch_strings_take_ascii_digits_only_and_stay_short_in_messages(text):
    with pytest.raises(ArchError) as err:
        Arch.parse(text, load_space("mbv3-tiny"))
    assert "cannot read" in str(err.value) and len(str(err.value)) < 300
