"""Music tokenizer: tiny random EnCodec saved and loaded by path, chunking, resampling, bad audio.

The helpers (make_tiny_encodec, tone, write_audio) are also used by test_prep_pipeline.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mumo_ds.tokenizers.audio_io import AudioError, load_audio, load_mono, resample
from mumo_ds.tokenizers.music_codec import BACKENDS, MusicTokenizer, chunk_windows, load_backend


def make_tiny_encodec(folder: Path, seed: int = 0) -> Path:
    """Save a 169 k-parameter EnCodec with the MusicGen code shape (4 x 2048 @ 50 Hz) to ``folder``.

    Random EnCodec codebooks are all zero (every code would be 0), so they are filled with
    random vectors at the scale of the encoder's outputs (halving per residual level).
    """
    import torch
    from transformers import EncodecConfig, EncodecModel

    cfg = EncodecConfig(
        sampling_rate=32000, audio_channels=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
        target_bandwidths=[2.2], hidden_size=16, num_filters=4, num_lstm_layers=1, normalize=False,
        use_causal_conv=False, norm_type="weight_norm", codebook_dim=16,
    )
    torch.manual_seed(seed)
    model = EncodecModel(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        scale = model.encoder(torch.randn(1, 1, 32000, generator=g) * 0.3).std().item()
        for k, layer in enumerate(model.quantizer.layers):
            embed = layer.codebook.embed
            embed.copy_(torch.randn(embed.shape, generator=g) * scale * 0.5**k)
            layer.codebook.embed_avg.copy_(embed)
            layer.codebook.inited.fill_(True)
    model.save_pretrained(folder)
    return folder


def tone(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """float32 [N, channels]: a few sines plus noise, different per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    chans = [
        0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.2 * np.sin(2 * np.pi * 3.1 * t) * rng.standard_normal(t.size) * 0.3
        for c in range(channels)
    ]
    return np.stack(chans, axis=1).astype(np.float32)


def write_audio(path: Path, seconds: float, sr: int = 32000, channels: int = 1, seed: int = 0) -> Path:
    import soundfile as sf

    sf.write(str(path), tone(seconds, sr, channels, seed), sr)
    return path


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory) -> Path:
    return make_tiny_encodec(tmp_path_factory.mktemp("encodec_tiny"))


def test_tiny_codec_loads_by_path_and_reports_its_format(codec_dir):
    tok = MusicTokenizer("encodec_32khz", codec_dir)
    assert tok.info == {"name": "encodec_32khz", "sample_rate": 32000, "frame_rate": 50, "num_codebooks": 4, "codebook_size": 2048}
    codes = tok.encode([tone(1.3, 32000)[:, 0]])[0]
    assert codes.dtype == np.int16 and codes.shape == (4, 65)  # ceil(41600 / 640)
    assert 0 <= codes.min() and codes.max() < 2048
    assert len(np.unique(codes)) > 1  # the filled codebooks give more than one code


def test_chunked_codes_equal_unchunked_and_batching_changes_nothing(codec_dir):
    long_track, short_track = tone(7.37, 32000, seed=1)[:, 0], tone(2.2, 32000, seed=2)[:, 0]
    whole = MusicTokenizer("encodec_32khz", codec_dir, chunk_seconds=100.0)
    chunked = MusicTokenizer("encodec_32khz", codec_dir, chunk_seconds=1.0, context_seconds=0.4, batch_size=3)
    ref_long, ref_short = whole.encode([long_track])[0], whole.encode([short_track])[0]
    got_long, got_short = chunked.encode([long_track, short_track])
    assert ref_long.shape == (4, 369)
    np.testing.assert_array_equal(got_long, ref_long)
    np.testing.assert_array_equal(got_short, ref_short)
    # Without context the seams differ: the context is what makes chunking exact.
    seams = MusicTokenizer("encodec_32khz", codec_dir, chunk_seconds=1.0, context_seconds=0.0).encode([long_track])[0]
    assert seams.shape == ref_long.shape and (seams != ref_long).any()


def test_chunk_windows_fall_on_whole_frames():
    assert chunk_windows(250, 100, 10) == [(0, 110, 0, 100), (90, 210, 10, 110), (190, 250, 10, 60)]
    assert chunk_windows(100, 100, 10) == [(0, 100, 0, 100)]


@pytest.mark.parametrize("sr,channels", [(44100, 2), (48000, 1)])
def test_other_rates_and_stereo_are_resampled_to_32khz_mono(codec_dir, tmp_path, sr, channels):
    path = write_audio(tmp_path / "x.flac", 1.5, sr, channels)
    raw, got_sr = load_audio(path)
    assert got_sr == sr and raw.shape == (channels, int(1.5 * sr))
    mono = load_mono(path, 32000)
    assert mono.shape == (48000,)
    np.testing.assert_allclose(mono, resample(raw.mean(axis=0), sr, 32000), atol=1e-6)
    codes = MusicTokenizer("encodec_32khz", codec_dir).encode_file(path)
    assert codes.shape == (4, 75) and codes.dtype == np.int16


def test_resampling_keeps_the_pitch():
    sr = 48000
    sine = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr).astype(np.float32)  # 1 s of 1 kHz
    out = resample(sine, sr, 32000)
    assert out.shape == (32000,)
    assert np.argmax(np.abs(np.fft.rfft(out))) == 1000  # 1 Hz bins over 1 s


def test_offset_and_max_seconds_cut_the_audio(codec_dir, tmp_path):
    path = write_audio(tmp_path / "x.wav", 3.0)
    tok = MusicTokenizer("encodec_32khz", codec_dir)
    wav = tok.load(path, offset_seconds=1.0, max_seconds=0.5)
    np.testing.assert_allclose(wav, load_mono(path, 32000)[32000:48000])


def test_decode_gives_audio_of_the_code_length(codec_dir, tmp_path):
    tok = MusicTokenizer("encodec_32khz", codec_dir)
    codes = tok.encode([tone(1.0, 32000)[:, 0]])[0]
    wav = tok.decode(codes)
    assert wav.shape == (50 * 640,) and wav.dtype == np.float32 and np.isfinite(wav).all()
    out = tok.write_wav(tmp_path / "dec" / "check.wav", wav)
    back, sr = sf.read(str(out))
    assert sr == 32000 and back.shape == (32000,)


def test_mp3_reads_when_libsndfile_supports_it(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    path = write_audio(tmp_path / "x.mp3", 1.0, 32000)
    assert load_mono(path, 32000).shape[0] > 30000


def test_missing_corrupt_truncated_and_silent_audio_are_named_errors(tmp_path):
    with pytest.raises(AudioError, match="nope.wav: audio file not found") as e:
        load_audio(tmp_path / "nope.wav")
    assert e.value.reason == "missing_file"

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 20)
    with pytest.raises(AudioError, match="junk.wav: cannot decode audio") as e:
        load_audio(junk)
    assert e.value.reason == "unreadable_audio"

    for suffix in (".wav", ".flac"):
        full = write_audio(tmp_path / f"full{suffix}", 1.0)
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        with pytest.raises(AudioError, match=f"cut{suffix}") as e:
            load_audio(cut)
        assert e.value.reason in {"truncated_audio", "unreadable_audio"}
    with pytest.raises(AudioError, match="WAV header declares"):
        load_audio(tmp_path / "cut.wav")

    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="silent.wav: the audio is silent") as e:
        load_mono(silent, 32000)
    assert e.value.reason == "silent_audio"
    assert load_mono(silent, 32000, allow_silent=True).shape == (32000,)


def test_unknown_backend_and_missing_encodec_package_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="choose one of"):
        MusicTokenizer("mp3codec")
    assert "encodec_24khz" in BACKENDS
    monkeypatch.setitem(__import__("sys").modules, "encodec", None)  # import encodec -> ImportError
    with pytest.raises(ImportError, match=r'pip install "mumo-ds\[encodec\]"'):
        load_backend("encodec_24khz", None)
    with pytest.raises(ValueError, match="needs a model folder"):
        load_backend("encodec_32khz", None)



def test_a_folder_of_another_model_is_a_named_error(tmp_path, capsys):
    """Another model's folder as --codec-model (here a T5, and the motion VQ-VAE whose config EncodecModel would
    half-read into an AttributeError): one error line and exit 2, no traceback."""
    from transformers import T5Config

    from data_prep.tokenize_music import main
    from mumo_ds.tokenizers.motion_vqvae import MotionVQVAE, MotionVQVAEConfig

    T5Config(d_model=8, num_layers=1, num_heads=1, d_ff=8, d_kv=8).save_pretrained(tmp_path / "t5")
    MotionVQVAE(MotionVQVAEConfig.from_preset("tiny")).save_pretrained(tmp_path / "vqvae")
    audio = write_audio(tmp_path / "a.wav", 0.5, 32000, 1)
    capsys.readouterr()
    with pytest.raises(ValueError, match=r"t5: holds a 't5' model, not an EnCodec; pass the folder of"):
        MusicTokenizer("encodec_32khz", tmp_path / "t5").backend
    assert main(["--codec-model", str(tmp_path / "vqvae"), "--out", str(tmp_path / "out"), str(audio)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'vqvae'}: ") and "EnCodec" in err and "Traceback" not in err

def test_a_silent_file_is_one_error_without_a_kept_anyway_warning(codec_dir, tmp_path, capsys, caplog):
    from data_prep.tokenize_music import main

    sf.write(str(tmp_path / "silent.wav"), np.zeros(16000, np.float32), 16000)
    assert main(["--codec-model", str(codec_dir), "--out", str(tmp_path / "codes"), str(tmp_path / "silent.wav")]) == 1
    assert "the audio is silent" in capsys.readouterr().err
    assert "kept because allow_silent" not in caplog.text  # the whole file is not judged before its cut


def test_tokenize_music_cli_encodes_decodes_and_reports_bad_files(codec_dir, tmp_path, capsys):
    from data_prep.tokenize_music import main

    good = write_audio(tmp_path / "good.wav", 1.0, 44100, 2)
    (tmp_path / "bad.wav").write_bytes(b"not audio at all" * 10)
    assert main(["--codec-model", str(codec_dir), "--out", str(tmp_path / "codes"), str(good), str(tmp_path / "bad.wav")]) == 1
    assert "bad.wav: cannot decode audio" in capsys.readouterr().err
    codes = np.load(tmp_path / "codes" / "good.npy")
    assert codes.shape == (4, 50) and codes.dtype == np.int16
    assert main(["--codec-model", str(codec_dir), "--decode", "--out", str(tmp_path / "wav"), str(tmp_path / "codes" / "good.npy")]) == 0
    assert sf.info(str(tmp_path / "wav" / "good.wav")).frames == 50 * 640
    pad, negative = codes.copy(), codes.copy()
    pad[2, 7], negative[1, 3] = 2048, -1
    for name, bad in {"pad": pad, "negative": negative, "float": codes * 0.5}.items():
        np.save(tmp_path / "codes" / f"{name}.npy", bad)  # a pad id, -1, and float codes: each reported, none stops the run
    capsys.readouterr()
    names = [str(tmp_path / "codes" / f"{n}.npy") for n in ("pad", "negative", "float", "good")]
    assert main(["--codec-model", str(codec_dir), "--decode", "--out", str(tmp_path / "wav2"), *names]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {names[0]}: music codes must lie in 0..2047, got {codes.min()}..2048" in err
    assert f"FAILED {names[1]}: music codes must lie in 0..2047, got -1..{codes.max()}" in err
    assert f"FAILED {names[2]}: music codes must be an integer [4, T] array, got float64" in err
    assert sorted(p.name for p in (tmp_path / "wav2").iterdir()) == ["good.wav"]
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "none"), str(good), str(tmp_path / "bad.wav")]) == 2  # no codec: one error
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--codec-model" in err and "FAILED" not in err and not (tmp_path / "none").exists()
    (tmp_path / "other").mkdir()
    twin = write_audio(tmp_path / "other" / "good.wav", 1.0, 44100, 1)
    assert main(["--codec-model", str(codec_dir), "--out", str(tmp_path / "twins"), str(good), str(twin)]) == 2
    assert "share a file name" in capsys.readouterr().err and not (tmp_path / "twins").exists()
