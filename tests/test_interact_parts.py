"""The parts of interactive learning, each against numbers worked out by hand: reward, budget,
KL controller, GAE, whitening, group baselines, prompts, and the rollout's padding and EOS."""

import pytest
import torch

from onceupon.config import PAPER_PROMPT, InteractConfig
from onceupon.errors import UserError
from onceupon.interact.budget import Budget
from onceupon.interact.kl import KLController
from onceupon.interact.ppo import PPO, gae
from onceupon.interact.prompts import PromptSource, load_prompts
from onceupon.interact.reward import story_reward
from onceupon.interact.group import group_advantages
from onceupon.interact.update import masked_whiten
from onceupon.teacher.base import Rating


# --------------------------------------------------------------------------- reward
def rating(score, valid=True):
    return Rating(valid=valid, raw="2 1 3", scores=None if score is None else {"x": 1}, score=score)


def test_reward_is_the_papers_formula():
    # r = (T + 0.4 * n_words / 90) / 1.4
    r = story_reward(rating(6 / 9), 45, length_bonus=0.4, length_norm_words=90)
    assert r == pytest.approx((6 / 9 + 0.4 * 45 / 90) / 1.4)
    assert story_reward(rating(1.0), 90, length_bonus=0.4, length_norm_words=90) == pytest.approx(1.0)
    assert story_reward(rating(0.0), 0, length_bonus=0.4, length_norm_words=90) == 0.0
    # no bonus: the teacher score alone
    assert story_reward(rating(0.5), 80, length_bonus=0.0, length_norm_words=90) == 0.5
    # the bonus saturates at length_norm_words (keeps r in [0, 1] when it is set low)
    assert story_reward(rating(1.0), 200, length_bonus=0.4, length_norm_words=20) == pytest.approx(1.0)


def test_excluded_ratings_give_no_reward_and_zero_policy_scores_count():
    assert story_reward(rating(None, valid=False), 50, length_bonus=0.4, length_norm_words=90) is None
    # invalid_policy=zero: the teacher sets score 0.0 but valid stays False; the story counts
    zeroed = Rating(valid=False, raw="???", scores={"x": 0}, score=0.0)
    assert story_reward(zeroed, 45, length_bonus=0.4, length_norm_words=90) == pytest.approx(0.2 / 1.4)


# --------------------------------------------------------------------------- budget
def test_paper_accounting_prompt_once_plus_teacher_words():
    b = Budget(input_budget=10_000, generation_budget=10**8, count_prompt="once")
    prompts = [PAPER_PROMPT] * 4
    a = b.admit(prompts, ["2 1 3"] * 4, [80, 70, 60, 50])
    assert a.n == 4 and not a.cut
    assert a.prompt_words == 16  # the paper's prompt, counted once
    assert a.teacher_words == 12 and a.input_words == 28 and a.generated_words == 260
    b.commit(a)
    a2 = b.admit(prompts, ["2 1 3"] * 4, [1, 1, 1, 1])
    assert a2.prompt_words == 0 and a2.input_words == 12
    b.commit(a2)
    assert (b.input_words, b.generated_words, b.stories) == (40, 264, 8)


def test_per_episode_counts_the_prompt_every_time():
    b = Budget(10_000, 10**8, count_prompt="per_episode")
    a = b.admit(["one two three", "one two three", "four"], ["5", "5", "5"], [1, 1, 1])
    assert a.prompt_words == 7 and a.teacher_words == 3


def test_last_batch_is_cut_to_the_longest_prefix_that_fits():
    # 16 prompt words + 3 per story: a budget of 16 + 3*5 + 2 admits exactly 5 stories.
    b = Budget(input_budget=16 + 15 + 2, generation_budget=10**8)
    a = b.admit([PAPER_PROMPT] * 8, ["2 1 3"] * 8, [10] * 8)
    assert a.n == 5 and a.cut and a.input_words == 31
    b.commit(a)
    assert b.input_words == 31 <= b.input_budget
    # the generation budget cuts too, and a story that does not fit stops the admission even
    # when a later, shorter one would fit
    g = Budget(input_budget=10**6, generation_budget=25)
    a = g.admit(["p"] * 4, ["1"] * 4, [10, 10, 10, 1])
    assert a.n == 2 and a.generated_words == 20


def test_groups_are_admitted_whole():
    b = Budget(input_budget=1 + 4 * 2 + 3, generation_budget=10**8)  # room for 2 groups of 4 and a bit
    a = b.admit(["p"] * 12, ["x"] * 12, [1] * 12, group_size=4)
    assert a.n == 8 and a.input_words == 1 + 8


def test_budget_state_round_trips():
    b = Budget(100, 100)
    b.commit(b.admit(["a b", "c"], ["1 2", "3"], [4, 5]))
    c = Budget(100, 100)
    c.load_state_dict(b.state_dict())
    assert c.state_dict() == b.state_dict()
    assert c.admit(["a b"], ["1"], [1]).prompt_words == 0  # remembered as already counted


# --------------------------------------------------------------------------- KL controller
def test_adaptive_kl_controller_matches_its_definition():
    k = KLController(0.2, adaptive=True, target=6.0, horizon=10_000)
    k.update(current_kl=9.0, n_stories=360)  # error +0.5 clipped to +0.2
    assert k.value == pytest.approx(0.2 * (1 + 0.2 * 360 / 10_000))
    k2 = KLController(0.2, target=6.0, horizon=10_000)
    k2.update(current_kl=5.4, n_stories=100)  # error -0.1
    assert k2.value == pytest.approx(0.2 * (1 - 0.1 * 100 / 10_000))
    fixed = KLController(0.2, adaptive=False)
    fixed.update(100.0, 360)
    assert fixed.value == 0.2


# --------------------------------------------------------------------------- GAE / whitening
def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # last position is padding
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.5)
    d2 = 1.0 + 0 - 0.1
    d1 = 0.0 + 0.1 - 0.2
    d0 = 0.0 + 0.2 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    assert adv[0, :3].tolist() == pytest.approx([a0, a1, a2])
    assert ret[0, :3].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.1])


def test_masked_whiten_ignores_masked_entries():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)
    assert w[0, 3] == 0
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)  # unbiased std of 1,2,3 is 1


def test_ppo_puts_the_reward_on_the_last_response_token_and_kl_on_every_token():
    ppo = PPO(InteractConfig(init_kl_coef=0.5))
    old = torch.tensor([[-1.0, -2.0, -3.0, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0, 0.0], [-2.0, -1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    rewards, kl = ppo.token_rewards(torch.tensor([0.7, 0.3]), old, ref, mask)
    assert rewards[0].tolist() == pytest.approx([-0.25, 0.0, 0.5 + 0.7, 0.0])
    assert rewards[1].tolist() == pytest.approx([-0.5, 0.3, 0.0, 0.0])


# --------------------------------------------------------------------------- group baselines
def test_rloo_leave_one_out_and_grpo_group_normalised():
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 9.0])
    inc = torch.tensor([True, True, True, True, True, True, True, False])
    adv, keep = group_advantages(r, inc, 4, "rloo")
    assert adv[:4].tolist() == pytest.approx([1 - 11 / 3, 2 - 10 / 3, 3 - 9 / 3, 6 - 6 / 3])
    assert adv[4:].tolist() == pytest.approx([0, 0, 0, 0]) and keep.tolist() == inc.tolist()
    adv, _ = group_advantages(r, inc, 4, "grpo")
    g = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert adv[:4].tolist() == pytest.approx(((g - g.mean()) / (g.std() + 1e-4)).tolist())


def test_a_group_with_one_valid_story_has_no_baseline():
    adv, keep = group_advantages(torch.tensor([1.0, 2.0]), torch.tensor([True, False]), 2, "rloo")
    assert keep.tolist() == [False, False] and adv.tolist() == [0.0, 0.0]


# --------------------------------------------------------------------------- prompts
def test_prompts_default_file_and_errors(tmp_path):
    assert load_prompts(InteractConfig()) == [PAPER_PROMPT]
    f = tmp_path / "p.txt"
    f.write_text("Once there was a cat.\n\nA dog ran.\n", encoding="utf-8")
    assert load_prompts(InteractConfig(prompts_file=str(f))) == ["Once there was a cat.", "A dog ran."]
    with pytest.raises(UserError, match="does not exist"):
        load_prompts(InteractConfig(prompts_file=str(tmp_path / "missing.txt")))
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(UserError, match="no prompt"):
        load_prompts(InteractConfig(prompts_file=str(tmp_path / "empty.txt")))


def test_prompts_from_a_dataset_column(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"text": ["A fox.", "A bear."], "other": [1, 2]}).save_to_disk(tmp_path / "ds")
    cfg = InteractConfig(prompts_dataset=str(tmp_path / "ds"), prompts_column="text")
    assert load_prompts(cfg) == ["A fox.", "A bear."]
    with pytest.raises(UserError, match="no column 'prompt'"):
        load_prompts(InteractConfig(prompts_dataset=str(tmp_path / "ds")))


def test_prompt_source_is_a_function_of_seed_and_position():
    pool = [f"p{i}" for i in range(5)]
    a = PromptSource(pool, seed=3)
    first = a.take(7) + a.take(6)
    assert sorted(first[:5]) == pool and sorted(first[5:10]) == pool  # every pass deals each once
    b = PromptSource(pool, seed=3, drawn=7)
    assert b.take(6) == first[7:]  # resuming from the position gives the same prompts


# --------------------------------------------------------------------------- rollout
@pytest.fixture(scope="module")
def student(tiny_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint), AutoModelForCausalLM.from_pretrained(tiny_checkpoint)


def test_left_padded_batch_is_scored_as_each_story_alone(student):
    from onceupon.interact.rollout import PolicyWithValue, generate_rollout, score_rollout

    tok, model = student
    torch.manual_seed(0)
    prompts = [PAPER_PROMPT, "The fox", "Mia found a key under the old tree."]
    r = generate_rollout(model, tok, prompts, max_new_tokens=10)
    assert r.attention_mask[1, 0] == 0  # the short prompt is left padded
    logps, values, ent = score_rollout(PolicyWithValue(model, True), r, 1.0)
    assert values.shape == logps.shape == ent.shape == r.response_mask.shape
    for i, p in enumerate(prompts):
        ids = tok(p, return_tensors="pt")["input_ids"][0]
        n = int(r.response_mask[i].sum())
        resp = r.sequences[i, r.prompt_width : r.prompt_width + n]
        with torch.no_grad():
            logits = model(torch.cat([ids, resp])[None]).logits[0, len(ids) - 1 : -1]
        alone = torch.log_softmax(logits, -1).gather(-1, resp[:, None]).squeeze(-1)
        assert torch.allclose(alone, logps[i, :n], atol=1e-5)


def test_a_story_stops_at_its_first_eos_and_its_text_has_no_special_tokens(student):
    from onceupon.interact.rollout import generate_rollout

    tok, model = student
    # Make EOS very likely so some stories end early, and <pad>/<s> likely too.
    lm_head = model.get_output_embeddings()
    bias = torch.zeros(lm_head.weight.shape[0])
    bias[tok.eos_token_id] = 3.0
    bias[tok.pad_token_id] = 2.0
    bias[tok.bos_token_id] = 2.0
    handle = lm_head.register_forward_hook(lambda m, i, o: o + bias)
    try:
        torch.manual_seed(1)
        r = generate_rollout(model, tok, [PAPER_PROMPT] * 16, max_new_tokens=12)
    finally:
        handle.remove()
    assert any(r.ended) and not all(r.ended)
    responses = r.sequences[:, r.prompt_width :]
    for i in range(16):
        n = int(r.response_mask[i].sum())
        if r.ended[i]:
            assert responses[i, n - 1] == tok.eos_token_id  # the EOS is the last scored token
            assert (responses[i, : n - 1] != tok.eos_token_id).all()
            assert (responses[i, n:] == tok.pad_token_id).all()
        else:
            assert n == responses.shape[1] == 12
        for special in ("<s>", "</s>", "<pad>"):
            assert special not in r.continuations[i]
        assert r.n_words[i] == len(r.continuations[i].split())


def test_too_long_prompts_are_a_user_error(student):
    from onceupon.interact.rollout import generate_rollout

    tok, model = student
    with pytest.raises(UserError, match="context"):
        generate_rollout(model, tok, ["word " * 200], max_new_tokens=90, context_length=128)



# --------------------------------------------------------------------------- exclusion
@pytest.mark.parametrize("algorithm", ["ppo", "rloo"])
def test_excluded_stories_contribute_nothing_to_the_update(student, algorithm):
    """Updating on 8 stories of which 4 are excluded (no reward) moves the weights exactly as
    updating on the 4 included stories alone."""
    import copy

    from onceupon.interact.objective import make_objective
    from onceupon.interact.rollout import PolicyWithValue, generate_rollout, score_rollout
    from onceupon.interact.update import Experience

    tok, model = student
    torch.manual_seed(0)
    cfg = InteractConfig(algorithm=algorithm, batch_size=8, mini_batch_size=8, epochs=2, learning_rate=1e-3,
                         group_size=2)
    r = generate_rollout(model, tok, [PAPER_PROMPT] * 8, max_new_tokens=10)
    torch.manual_seed(1)
    base = PolicyWithValue(copy.deepcopy(model), algorithm == "ppo")
    ref = PolicyWithValue(model, False)
    lp, v, _ = score_rollout(base, r, 1.0)
    rlp, _, _ = score_rollout(ref, r, 1.0)
    scores = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.0, 0.0, 0.0, 0.0])
    include = torch.tensor([True] * 4 + [False] * 4)

    def updated(idx):
        policy = copy.deepcopy(base)
        opt = torch.optim.SGD(policy.parameters(), lr=0.1)  # Adam would magnify float noise in ~0 gradients
        exp = Experience(sequences=r.sequences[idx], attention_mask=r.attention_mask[idx], prompt_width=r.prompt_width,
                         response_mask=r.response_mask[idx], old_logprobs=lp[idx], ref_logprobs=rlp[idx],
                         values=None if v is None else v[idx], rewards=scores[idx], include=include[idx])
        torch.manual_seed(2)
        make_objective(cfg).update(policy, opt, exp)
        return torch.cat([p.detach().flatten() for p in policy.parameters()])

    everything, only_included = updated(torch.arange(8)), updated(torch.arange(4))
    start = torch.cat([p.detach().flatten() for p in base.parameters()])
    assert not torch.allclose(everything, start)  # the update did something
    assert torch.allclose(everything, only_included, atol=1e-6)


# --------------------------------------------------------------------------- anthology
def test_anthology_resume_cuts_what_came_after_the_checkpoint_and_refuses_damage_before_it(tmp_path):
    from onceupon.interact.anthology import Anthology

    book = Anthology(tmp_path)
    book.append([{"step": 1, "index": i, "continuation": f"story {i}", "reward": 0.5} for i in range(3)])
    saved = book.checkpoint()
    book.append([{"step": 2, "index": 0, "continuation": "after", "reward": None}])
    with open(book.path, "a", encoding="utf-8") as f:
        f.write('{"step": 2, "ind')  # torn by a crash
    intact = book.path.read_text(encoding="utf-8")

    resumed = Anthology(tmp_path)
    resumed.resume(saved, "chck_1K")
    assert [line.count("story") for line in book.path.read_text(encoding="utf-8").splitlines()] == [1, 1, 1]
    assert resumed.checkpoint() == saved  # the running hash continues from the checked stories

    changed, lost = intact.replace("story 1", "story 9"), intact.split("\n", 1)[1]  # story 1 edited; story 0 gone
    for damaged in (changed, lost):
        book.path.write_text(damaged, encoding="utf-8")
        with pytest.raises(UserError, match="no longer matches checkpoint chck_1K"):
            Anthology(tmp_path).resume(saved, "chck_1K")
        assert book.path.read_text(encoding="utf-8") == damaged  # refused before anything is cut
