"""MiniLM smoke test: SmartDeal decomposition of ONE encoder layer of all-MiniLM-L6-v2 (offline)."""

import torch

from sparrow.sw.minilm import decompose_linear, encoder_linears, load_minilm, load_sentences


def test_one_layer_decomposition_keeps_embeddings_close():
    torch.set_num_threads(1)
    st = load_minilm()
    _, held = load_sentences()
    assert len(held) >= 50
    with torch.no_grad():
        ref = st.encode(held[:8], convert_to_tensor=True)
    name, lin = encoder_linears(st)[0]
    assert name == "encoder.layer.0.attention.self.query" and tuple(lin.weight.shape) == (384, 384)
    w0 = lin.weight.detach().clone()
    sd, storage, err = decompose_linear(lin, k=4, levels=8)
    assert 0.0 < err < 0.25
    assert storage["fp32_bits"] / storage["weight_bits"] > 6
    assert torch.allclose(lin.weight, sd.weight_matrix().detach())
    assert not torch.equal(lin.weight, w0)
    with torch.no_grad():
        emb = st.encode(held[:8], convert_to_tensor=True)
    cos = torch.nn.functional.cosine_similarity(ref, emb, dim=1)
    assert cos.min() > 0.97
