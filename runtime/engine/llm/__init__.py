"""The LLM engine: `Llm.from_artifact(dir)`, `llm.start(prompt)`, then `step()` per token.

- `generator.py`: the model, its KV cache across turns, and one generation's loop and stops;
- `runners.py`: the two graph kinds (fused, shared KV buffer; optimum, growing KV);
- `sampling.py`: greedy, temperature, top-k, top-p, repetition penalty, seed;
- `text.py`: tokenizer, streaming detokenization, stop strings, chat templates without Jinja.
"""

from runtime.engine.llm.generator import Generation, GenerationConfig, Llm, max_length_for_budget
from runtime.engine.llm.sampling import SamplingParams

__all__ = ["Generation", "GenerationConfig", "Llm", "SamplingParams", "max_length_for_budget"]
