"""Product rules: what each row of a purchase earns (excluded goods, rates of their own)."""
