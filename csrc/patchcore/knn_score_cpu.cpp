// placeholder: implemented by its op's owner
