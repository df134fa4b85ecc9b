"""Several prompts, fewer calls: ``batch_llm_call`` and its composite-prompt packing.

call.py         batch_llm_call / batch_llm_call_results: native list prompts, packing, fallback
packing.py      pack sub-prompts into one chat request and split the answer robustly
collector.py    BatchCollector: requests arriving within a short window go out together
"""
