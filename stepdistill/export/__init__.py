"""Deployable formats of a trained student and their scoring: `stepdistill export` (deploy.py).

gguf_file.py      the student as a float16 GGUF file (llama.cpp's format), tokenizer embedded
quantize.py       llama.cpp's quantizer: q8_0, q4_k_m, ...
llama_student.py  a GGUF file run by llama.cpp, answering evaluate.predict_labels
deploy.py         export, score against the PyTorch student, write deploy.json
card.py           the model card (README.md) and Ollama Modelfile
predict.py        `stepdistill predict FILE.gguf`
"""
