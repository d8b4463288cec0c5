"""The LLM-judge reward: its reply parser against adversarial strings, a scripted judge on loopback
(scores, cache, bounded concurrency, failures, time-outs), a judge that is down inside a real GRPO
step, and vLLM's real OpenAI server with structured outputs."""

import json
import re
import threading
import time

import pytest

from lightning_longrl.data.records import VideoQARecord
from lightning_longrl.rl.judge import DEFAULT_TEMPLATE, SCORE_SCHEMA, JudgeReward, load_template, parse_score
from lightning_longrl.rl.rewards import CombinedReward, RewardSpec

from helpers import LoopbackChatServer, free_port, grpo_run


@pytest.mark.parametrize(("reply", "score"), [
    ('{"score": 1}', 1.0),
    ('{"score": 0.5}', 0.5),
    (' ```json\n{"score": 0}\n``` ', 0.0),
    ('{"score": 1, "reason": "same meaning"}', 1.0),
    ('{"score": 1.5}', None),                     # out of range
    ('{"score": -0.1}', None),
    ('{"score": NaN}', None),                     # Python's json reads NaN: refused as not finite
    ('{"score": Infinity}', None),
    ('{"score": true}', None),                    # a bool is not a score
    ('{"score": "1"}', None),
    ('{"score": [1]}', None),
    ('{"score": 1} {"score": 0}', None),          # two objects
    ('Sure! {"score": 1}', None),                 # text around the object
    ('{"score": 1, "score_override": 0}', None),  # unknown keys
    ('{"verdict": 1}', None),
    ('[{"score": 1}]', None),
    ("1", None),
    ("", None),
    ('{"score": 1', None),                        # cut off
])
def test_parse_score_accepts_only_one_clean_score(reply, score):
    assert parse_score(reply) == score


def test_templates_need_exactly_the_three_placeholders(tmp_path):
    assert set(re.findall(r"(?<!\{)\{(\w+)\}(?!\})", DEFAULT_TEMPLATE)) == {"question", "reference", "answer"}
    good = tmp_path / "judge.txt"
    good.write_text("Q {question} R {reference} A {answer} reply {{\"score\": 1}}")
    assert load_template(str(good)).startswith("Q {question}")
    bad = tmp_path / "bad.txt"
    bad.write_text("Q {question} A {answer} {candidate}")
    with pytest.raises(ValueError, match=r"bad\.txt: bad placeholder\(s\) \['candidate'\]; missing \['reference'\]"):
        load_template(str(bad))
    with pytest.raises(ValueError, match="no such file"):
        load_template(str(tmp_path / "missing.txt"))


class ScriptedJudge(LoopbackChatServer):
    """A loopback judge: 1 when the candidate equals the reference, else 0; or scripted failures.
    It counts the requests it is answering at once."""

    def __init__(self, mode: str = "grade", delay: float = 0.0) -> None:
        self.mode, self.delay = mode, delay
        self.in_flight = self.max_in_flight = 0
        self._count = threading.Lock()
        super().__init__(self._grade)

    @property
    def prompts(self) -> list[dict]:
        return self.requests

    def _grade(self, body: dict) -> tuple[int, str]:
        with self._count:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.delay)
        with self._count:
            self.in_flight -= 1
        prompt = body["messages"][0]["content"]
        reference = re.search(r"Reference answer: (.*)\n", prompt).group(1)
        answer = re.search(r"<<<\n(.*)\n>>>", prompt, re.DOTALL).group(1)
        if self.mode == "error":
            return 500, ""
        if self.mode == "garbage":
            return 200, "I think it is right."
        return 200, json.dumps({"score": int(answer == reference)})


def _records(n: int) -> list[VideoQARecord]:
    return [VideoQARecord(id=f"q{i}", video="v.mp4", question=f"How many birds in clip {i}?", answer="three") for i in range(n)]


def _response(answer: str) -> str:
    return f"<think>counting</think><answer>{answer}</answer>"


def test_scripted_judge_scores_caches_and_bounds_concurrency():
    server = ScriptedJudge(delay=0.05)
    try:
        judge = JudgeReward(base_url=server.url, model="j", concurrency=3, structured="none")
        records = _records(8)
        responses = [_response("three" if i % 2 == 0 else "four") for i in range(8)] + ["no tags at all", _response("three")]
        scores = judge.score_batch(responses, [*records, records[0], records[0]])
        assert scores.values == [1.0, 0.0] * 4 + [0.0, 1.0]
        assert scores.failed == [False] * 10
        # 8 distinct (question, reference, answer): the malformed one is not sent, the repeat of q0's answer is shared
        assert len(server.prompts) == judge.requests == 8
        assert 1 < server.max_in_flight <= 3 and judge.client.max_in_flight <= 3
        assert server.prompts[0]["temperature"] == 0.0 and "response_format" not in server.prompts[0]
        again = judge.score_batch(responses[:4], records[:4])
        assert again.values == [1.0, 0.0, 1.0, 0.0] and len(server.prompts) == 8 and judge.cache_hits == 4
        schema = JudgeReward(base_url=server.url, model="j")  # the default: OpenAI's json_schema response format
        assert schema.score_batch([_response("three")], records[:1]).values == [1.0]
        assert server.prompts[-1]["response_format"]["json_schema"]["schema"] == SCORE_SCHEMA
    finally:
        server.close()


@pytest.mark.parametrize(("mode", "delay", "timeout_s", "why"), [
    ("error", 0.0, 10.0, "HTTP 500"),
    ("garbage", 0.0, 10.0, "unparsable reply"),
    ("grade", 2.0, 0.3, "Timeout"),
])
def test_failed_judgements_score_the_failure_score_and_are_counted(mode, delay, timeout_s, why, caplog):
    server = ScriptedJudge(mode=mode, delay=delay)
    try:
        judge = JudgeReward(base_url=server.url, model="j", retries=1, timeout_s=timeout_s, failure_score=0.25,
                            structured="none")
        scores = judge.score_batch([_response("three"), "malformed"], _records(2))
        assert scores.values == [0.25, 0.0] and scores.failed == [True, False]
        assert judge.failures == 1 and judge.cache == {}  # a failure is not cached: the next step asks again
        assert why in caplog.text and "1 of 1 judgements failed" in caplog.text
        assert judge.client.attempts == (1 if mode == "garbage" else 2)  # failures retried once, replies not
    finally:
        server.close()


def test_a_judge_that_is_down_gives_zero_and_grpo_keeps_training(tmp_path, tiny_checkpoints, synth_dir):
    """Every response goes to a closed port: the step scores 0, counts the failures and still updates."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    rewards = [RewardSpec("judge", "lightning_longrl.rl.judge.JudgeReward", 1.0,
                          {"base_url": url, "model": "j", "retries": 0, "timeout_s": 2.0, "require_format": False}),
               RewardSpec("format", "lightning_longrl.rl.rewards.format_reward", 0.1)]
    trainer, module, data = grpo_run(tmp_path, tiny_checkpoints["qwen2_5_vl"], synth_dir, max_steps=1,
                                     module_kwargs={"rewards": rewards})
    trainer.fit(module, data)
    metrics = trainer.callback_metrics
    assert float(metrics["reward/judge_mean"]) == 0.0
    assert float(metrics["reward/judge_failed_mean"]) == 1.0
    assert trainer.global_step == 1


def test_reward_specs_with_arguments_build_classes_and_name_bad_ones():
    with pytest.raises(ValueError, match=r"reward 'j': arguments given but 'lightning_longrl.rl.rewards.format_reward' is not a class"):
        CombinedReward([RewardSpec("j", "lightning_longrl.rl.rewards.format_reward", 1.0, {"x": 1})])
    with pytest.raises(ValueError, match=r"reward 'j': lightning_longrl.rl.judge.JudgeReward does not take arguments \['url'\]"):
        CombinedReward([RewardSpec("j", "lightning_longrl.rl.judge.JudgeReward", 1.0, {"url": "x"})])
