// Tokenizer: see DESIGN.md for this module's responsibility.
