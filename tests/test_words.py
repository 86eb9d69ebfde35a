import pytest

from onceupon.errors import UserError
from onceupon.words import (
    babylm_milestones,
    checkpoint_name,
    count_words,
    crossed,
    every_milestones,
    milestone_name,
    parse_word_count,
)


def test_count_words_is_whitespace_split():
    assert count_words("") == 0
    assert count_words("   ") == 0
    assert count_words("Once upon a time,") == 4
    assert count_words("tabs\tand\nnewlines  and  spaces") == 5
    assert count_words("don't stop-now !") == 3


def test_babylm_schedule_matches_the_challenge():
    ms = babylm_milestones()
    assert ms[:10] == [i * 1_000_000 for i in range(1, 10)] + [10_000_000]
    assert 20_000_000 in ms and 90_000_000 in ms and 100_000_000 in ms
    assert 200_000_000 in ms and ms[-1] == 1_000_000_000
    assert len(ms) == 28 and ms == sorted(set(ms))


def test_scaled_schedule_and_cap():
    assert babylm_milestones(1_000, up_to=30_000) == [i * 1000 for i in range(1, 11)] + [20_000, 30_000]
    assert every_milestones(10_000, 35_000) == [10_000, 20_000, 30_000]


def test_names_follow_the_babylm_convention():
    assert milestone_name(20_000_000) == "chck_20M"
    assert milestone_name(1_000_000_000) == "chck_1000M"
    assert milestone_name(500_000) == "chck_500K"
    assert milestone_name(1234) == "chck_1234W"


def test_parse_word_count():
    assert parse_word_count("1M") == 1_000_000
    assert parse_word_count("500k") == 500_000
    assert parse_word_count("1.5M") == 1_500_000
    assert parse_word_count("1_000") == 1000
    assert parse_word_count(7) == 7
    with pytest.raises(UserError):
        parse_word_count("lots")


def test_crossed_milestones():
    assert crossed([10, 20, 30], 10, 25) == [20]
    assert crossed([10, 20, 30], 0, 30) == [10, 20, 30]


def test_checkpoint_names_never_understate_what_they_hold():
    # BabyLM's milestone labels: at least that many words (a step passes a milestone by a few).
    assert checkpoint_name(2_000_000, 2_000_123) == "chck_2M"
    assert checkpoint_name(5_000, 5_004) == "chck_5K"
    # A count that is not a whole thousand reads as exact: it is the exact count held.
    assert checkpoint_name(300, 304) == "chck_304W"
    assert checkpoint_name(39_888, 39_888) == "chck_39888W"
    assert checkpoint_name(997, 1_000) == "chck_1K"
