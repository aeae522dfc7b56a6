import torch

from modelforge.data.padding import pad_rows


def test_pad_rows_pads_ids_and_waveforms_and_returns_lengths():
    ids, lengths = pad_rows([[5, 6, 7], [8]], value=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]] and lengths.tolist() == [3, 1] and ids.dtype == torch.long
    waves, lengths = pad_rows([torch.ones(2), torch.full((4,), 0.5)])
    assert waves.tolist() == [[1.0, 1.0, 0.0, 0.0], [0.5] * 4] and waves.dtype == torch.float32
    assert lengths.tolist() == [2, 4]


def test_pad_rows_of_nothing_keeps_the_minimum_width():
    ids, lengths = pad_rows([], min_width=1)
    assert ids.shape == (0, 1) and lengths.shape == (0,)
