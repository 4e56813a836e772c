
hello*x