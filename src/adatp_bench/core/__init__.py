"""The data types both sides speak: the models build and run them, the pruning methods read and choose from them.

Nothing here imports :mod:`adatp_bench.models` or :mod:`adatp_bench.pruning`, so both can import it:

- :mod:`~adatp_bench.core.layout`: where the video sits in the unpruned sequence (:class:`VideoLayout`), the visual
  tokens a pre-LLM method selects from (:class:`VisualTokens`), and the one rule for which newlines survive;
- :mod:`~adatp_bench.core.sequence`: token kinds and the prefill sequence (:class:`SequenceState`);
- :mod:`~adatp_bench.core.context`: what a method may know about a sample (:class:`SampleContext`) and the narrow
  model view it computes through (:class:`ModelView`).
"""
