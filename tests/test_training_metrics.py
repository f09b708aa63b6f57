import numpy as np
import pytest
import torch

from hicmae.training.metrics import ViewMerger, ccc, classification_metrics, regression_metrics


def test_views_merge_softmax_then_mean_and_padding_duplicates_count_once():
    merger = ViewMerger("classification")
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
    index, view = torch.tensor([7, 7, 3, 3]), torch.tensor([0, 1, 0, 1])
    target = torch.tensor([0, 0, 1, 1])
    merger.update(index[:2], view[:2], logits[:2], target[:2])
    merger.update(index[2:], view[2:], logits[2:], target[2:])
    merger.update(index[:1], view[:1], logits[:1], target[:1])  # a DistributedSampler pad: clip 7 view 0 again
    out = merger.compute()
    assert out["index"].tolist() == [3, 7]
    assert out["num_views"].tolist() == [2, 2]
    expected7 = (logits[0].softmax(-1) + logits[1].softmax(-1)) / 2
    assert torch.allclose(out["scores"][1], expected7)
    assert out["targets"][:, 0].tolist() == [1, 0]


def test_regression_views_average_raw_outputs():
    merger = ViewMerger("regression")
    merger.update(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]), torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                  torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]))
    out = merger.compute()
    assert out["scores"].tolist() == [[2.0, 3.0], [5.0, 6.0]]


def test_war_uar_f1_on_an_imbalanced_example():
    # 4 of class 0 all right, 2 of class 1 one right: WAR 5/6, UAR (1 + 0.5)/2.
    targets = torch.tensor([0, 0, 0, 0, 1, 1])
    scores = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 0, 1, 0]), 2).float()
    m = classification_metrics(scores, targets, 2)
    assert m["war"] == pytest.approx(100 * 5 / 6)
    assert m["uar"] == pytest.approx(75.0)
    f1_0, f1_1 = 2 * 0.8 * 1 / 1.8, 2 * 1 * 0.5 / 1.5
    assert m["mf1"] == pytest.approx(100 * (f1_0 + f1_1) / 2, rel=1e-5)
    assert m["wf1"] == pytest.approx(100 * (4 * f1_0 + 2 * f1_1) / 6, rel=1e-5)


@pytest.mark.parametrize("names", [["arousal", "valence", "dominance"], ["valence"]])
def test_ccc_pcc_mae_rmse_match_numpy_definitions(names):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(50, len(names), generator=g, dtype=torch.float64)
    p = 0.7 * t + 0.3 * torch.randn(50, len(names), generator=g, dtype=torch.float64) + 0.2
    m = regression_metrics(p.float(), t.float(), names)
    for i, name in enumerate(names):
        x, y = p[:, i].numpy(), t[:, i].numpy()
        cov = np.cov(x, y)  # unbiased, as the original
        expected = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (x.mean() - y.mean()) ** 2)
        assert m[f"ccc_{name}"] == pytest.approx(expected, rel=1e-4)
        assert m[f"pcc_{name}"] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-4)
        assert m[f"mae_{name}"] == pytest.approx(np.abs(x - y).mean(), rel=1e-4)
        assert m[f"rmse_{name}"] == pytest.approx(np.sqrt(((x - y) ** 2).mean()), rel=1e-4)
    assert m["ccc"] == pytest.approx(np.mean([m[f"ccc_{n}"] for n in names]))
    assert ccc(t, t).tolist() == pytest.approx([1.0] * len(names))
